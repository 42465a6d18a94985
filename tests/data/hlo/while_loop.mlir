// A loop carrying an i32 counter and an f32 value; its input comes from an f16 op.
module @while_loop {
  func.func public @main(%arg0: tensor<4xf16>) -> tensor<4xf32> {
    %0 = stablehlo.abs %arg0 : tensor<4xf16>
    %1 = stablehlo.convert %0 : (tensor<4xf16>) -> tensor<4xf32>
    %c = stablehlo.constant dense<0> : tensor<i32>
    %2:2 = stablehlo.while(%iterArg = %c, %iterArg_1 = %1) : tensor<i32>, tensor<4xf32>
     cond {
      %c_3 = stablehlo.constant dense<3> : tensor<i32>
      %9 = stablehlo.compare  LT, %iterArg, %c_3,  SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      stablehlo.return %9 : tensor<i1>
    } do {
      %cst = stablehlo.constant dense<5.000000e-01> : tensor<4xf32>
      %9 = stablehlo.multiply %iterArg_1, %cst : tensor<4xf32>
      %c_3 = stablehlo.constant dense<1> : tensor<i32>
      %10 = stablehlo.add %iterArg, %c_3 : tensor<i32>
      stablehlo.return %10, %9 : tensor<i32>, tensor<4xf32>
    } loc("jit(f)/jit(main)/while")
    return %2#1 : tensor<4xf32>
  }
}
