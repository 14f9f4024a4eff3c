{
  "targets": [
    {
      "target_name": "peft_mpi",
      "sources": ["src/mpi_addon.cc"],
      "include_dirs": ["<!@(mpicc --showme:incdirs)"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8", "OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1"],
      "cflags_cc": ["-O2", "-pthread"],
      "libraries": ["<!@(mpicc --showme:link)", "-ldl"]
    }
  ]
}
