"""Build script: the package is declared in setup.cfg; this file adds

* the native allocator (ditto_spu/native/aligned_alloc.c), built with the system C compiler;
* the repository's configs/ (modes, precision policies, deployment examples) installed as
  package data ``ditto_spu/configs`` (found by :func:`ditto_spu.configs_dir.configs_dir`).
"""

from setuptools import Extension, find_packages, setup

setup(
    packages=find_packages(include=["ditto_spu", "ditto_spu.*", "passes", "passes.*"])
    + ["ditto_spu.configs", "ditto_spu.configs.modes"],
    package_dir={"ditto_spu.configs": "configs"},
    package_data={
        "ditto_spu.native": ["*.c"],
        "ditto_spu.results": ["*.json"],
        "ditto_spu.configs": ["*.json"],
        "ditto_spu.configs.modes": ["*.json"],
    },
    ext_modules=[
        Extension(
            "ditto_spu.native._aligned_alloc",
            sources=["ditto_spu/native/aligned_alloc.c"],
            # -fno-builtin: keep gcc from turning malloc+memset into a call to calloc.
            extra_compile_args=["-O2", "-fno-builtin"],
        )
    ],
)
