"""Build script: the package is declared in setup.cfg; this file only adds the native
allocator (ditto_spu/native/aligned_alloc.c), built with the system C compiler."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ditto_spu.native._aligned_alloc",
            sources=["ditto_spu/native/aligned_alloc.c"],
            # -fno-builtin: keep gcc from turning malloc+memset into a call to calloc.
            extra_compile_args=["-O2", "-fno-builtin"],
        )
    ]
)
