// A two-result reduce (argmax), a returned argument, a returned constant, a repeated result.
module @multi_result {
  func.func public @main(%arg0: tensor<5xf32>, %arg1: tensor<2xf16>) -> (tensor<f32>, tensor<i32>, tensor<2xf16>, tensor<3xf32>, tensor<i32>) {
    %0 = stablehlo.iota dim = 0 : tensor<5xi32>
    %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %c = stablehlo.constant dense<0> : tensor<i32>
    %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [0] : (tensor<5xf32>, tensor<5xi32>, tensor<f32>, tensor<i32>) -> (tensor<f32>, tensor<i32>)
     reducer(%a: tensor<f32>, %b: tensor<f32>) (%i: tensor<i32>, %j: tensor<i32>)  {
      %2 = stablehlo.compare  GT, %a, %b,  FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %3 = stablehlo.select %2, %a, %b : tensor<i1>, tensor<f32>
      %4 = stablehlo.select %2, %i, %j : tensor<i1>, tensor<i32>
      stablehlo.return %3, %4 : tensor<f32>, tensor<i32>
    }
    %cst_0 = stablehlo.constant dense<[1.0, 2.0, 3.0]> : tensor<3xf32>
    return %1#0, %1#1, %arg1, %cst_0, %1#1 : tensor<f32>, tensor<i32>, tensor<2xf16>, tensor<3xf32>, tensor<i32>
  }
}
