{
  "targets": [
    {
      "target_name": "ambit_native",
      "sources": ["ambit_native.c", "seqpacket.c", "common.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11", "-fvisibility=hidden"]
    }
  ]
}
