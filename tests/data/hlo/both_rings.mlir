// %0 (f16) is used in FXP32 (multiply) and converted to f32 twice: one cast, reused.
module @both_rings {
  func.func public @main(%arg0: tensor<3xf16>) -> (tensor<3xf16>, tensor<3xf32>, tensor<3xf32>) {
    %0 = stablehlo.negate %arg0 : tensor<3xf16>
    %1 = stablehlo.multiply %0, %0 : tensor<3xf16>
    %2 = stablehlo.convert %0 : (tensor<3xf16>) -> tensor<3xf32>
    %3 = stablehlo.exponential %2 : tensor<3xf32>
    %4 = stablehlo.convert %0 : (tensor<3xf16>) -> tensor<3xf32>
    %5 = stablehlo.add %4, %3 : tensor<3xf32>
    return %1, %3, %5 : tensor<3xf16>, tensor<3xf32>, tensor<3xf32>
  }
}
