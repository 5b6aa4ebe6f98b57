{
  "targets": [
    {
      "target_name": "kerntap_native",
      "sources": [
        "native/btf.cc", "native/errors.cc", "native/iter.cc", "native/map_updates.cc",
        "native/maps.cc", "native/module.cc", "native/object.cc", "native/options.cc", "native/ringbuf.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["<!@(pkg-config --libs libbpf)"]
    }
  ]
}
