// Two f16 ops in different layers: an override gives layer/1 more fraction bits, so the
// edge between them (no convert) needs a rescale cast FXP32[f=8] -> FXP32[f=12].
module @scoped_override {
  func.func public @main(%arg0: tensor<4xf16>) -> tensor<4xf16> {
    %0 = stablehlo.negate %arg0 : tensor<4xf16> loc("jit(f)/jit(main)/encoder/layer/0/dense/neg")
    %1 = stablehlo.multiply %0, %0 : tensor<4xf16> loc("jit(f)/jit(main)/encoder/layer/1/dense/mul")
    return %1 : tensor<4xf16>
  }
}
