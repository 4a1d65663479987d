{
  "targets": [
    {
      "target_name": "ambit_native",
      "sources": ["ambit_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
