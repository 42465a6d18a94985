// A call to a function declared without a body cannot be inlined.
module @unsupported_call {
  func.func public @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {
    %0 = func.call @external(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc("jit(f)/jit(main)/encoder/layer/0/mystery"("model.py":12:7))
    return %0 : tensor<4xf32>
  }
  func.func private @external(tensor<4xf32>) -> tensor<4xf32>
}
