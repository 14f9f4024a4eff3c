{
  "targets": [
    {
      "target_name": "peft_native",
      "sources": ["src/addon.cc", "src/kernels.cc", "src/pool.cc", "src/layout.cc", "src/nf4.cc", "src/bf16.cc", "src/gemv.cc", "src/bf16_gemm.cc", "src/sgemm.cc"],
      "include_dirs": ["<!(node check-openblas.cjs include)"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8"],
      "cflags!": ["-O2", "-O0"],
      "cflags_cc!": ["-O2", "-O0"],
      "cflags_cc": ["-O3", "-march=x86-64-v3", "-mtune=generic", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-pthread"],
      "libraries": ["-L<!(node check-openblas.cjs lib)", "-lopenblas", "-ldl", "-pthread"]
    }
  ]
}
