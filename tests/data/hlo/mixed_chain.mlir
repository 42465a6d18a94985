// f32 -> f16 multiply -> f32 add: two casts, segments FXP32 then FXP64.
module @mixed_chain {
  func.func public @main(%arg0: tensor<4xf32>, %arg1: tensor<4xf32>) -> tensor<4xf32> {
    %0 = stablehlo.convert %arg0 : (tensor<4xf32>) -> tensor<4xf16> loc("jit(f)/jit(main)/dense/convert_element_type")
    %cst = stablehlo.constant dense<2.000000e+00> : tensor<4xf16>
    %1 = stablehlo.multiply %0, %cst : tensor<4xf16> loc("jit(f)/jit(main)/dense/mul")
    %2 = stablehlo.convert %1 : (tensor<4xf16>) -> tensor<4xf32> loc("jit(f)/jit(main)/dense/convert_element_type")
    %3 = stablehlo.add %2, %arg1 : tensor<4xf32> loc("jit(f)/jit(main)/norm/add")
    return %3 : tensor<4xf32>
  }
}
