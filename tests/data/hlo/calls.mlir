// Private functions called from @main and from a loop body are inlined.
module @calls {
  func.func public @main(%arg0: tensor<4xf32>) -> tensor<4xf16> {
    %0 = func.call @double(%arg0) : (tensor<4xf32>) -> tensor<4xf32>
    %1 = func.call @to_half(%0) : (tensor<4xf32>) -> tensor<4xf16>
    return %1 : tensor<4xf16>
  }
  func.func private @double(%arg0: tensor<4xf32>) -> tensor<4xf32> {
    %0 = stablehlo.add %arg0, %arg0 : tensor<4xf32>
    return %0 : tensor<4xf32>
  }
  func.func private @to_half(%arg0: tensor<4xf32>) -> tensor<4xf16> {
    %0 = stablehlo.convert %arg0 : (tensor<4xf32>) -> tensor<4xf16>
    %1 = func.call @square(%0) : (tensor<4xf16>) -> tensor<4xf16>
    return %1 : tensor<4xf16>
  }
  func.func private @square(%arg0: tensor<4xf16>) -> tensor<4xf16> {
    %0 = stablehlo.multiply %arg0, %arg0 : tensor<4xf16>
    return %0 : tensor<4xf16>
  }
}
