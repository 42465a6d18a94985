// Complex numbers have no fixed-point encoding.
module @unsupported_complex {
  func.func public @main(%arg0: tensor<4xf32>, %arg1: tensor<4xf32>) -> tensor<4xf32> {
    %0 = stablehlo.complex %arg0, %arg1 : tensor<4xcomplex<f32>> loc("jit(f)/jit(main)/fft/complex"("model.py":30:4))
    %1 = stablehlo.real %0 : (tensor<4xcomplex<f32>>) -> tensor<4xf32>
    return %1 : tensor<4xf32>
  }
}
