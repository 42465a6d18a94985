// A reduction over f16 (region stays whole in FXP32) and a case whose branches capture
// an f32 value from outside (implicit captures).
module @reduce_case {
  func.func public @main(%arg0: tensor<2x4xf16>, %arg1: tensor<i32>, %arg2: tensor<4xf32>) -> (tensor<2xf16>, tensor<4xf32>) {
    %cst = stablehlo.constant dense<0.000000e+00> : tensor<f16>
    %0 = stablehlo.reduce(%arg0 init: %cst) across dimensions = [1] : (tensor<2x4xf16>, tensor<f16>) -> tensor<2xf16>
     reducer(%a: tensor<f16>, %b: tensor<f16>)  {
      %s = stablehlo.add %a, %b : tensor<f16>
      stablehlo.return %s : tensor<f16>
    }
    %1 = stablehlo.exponential %arg2 : tensor<4xf32>
    %2 = "stablehlo.case"(%arg1) ({
      %cst_1 = stablehlo.constant dense<1.000000e+00> : tensor<4xf32>
      %10 = stablehlo.add %1, %cst_1 : tensor<4xf32>
      stablehlo.return %10 : tensor<4xf32>
    }, {
      %10 = stablehlo.multiply %1, %1 : tensor<4xf32>
      stablehlo.return %10 : tensor<4xf32>
    }) : (tensor<i32>) -> tensor<4xf32>
    return %0, %2 : tensor<2xf16>, tensor<4xf32>
  }
}
