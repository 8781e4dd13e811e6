;; echo: copies /input/input.txt to stdout and to /output/echo.txt.
;; Without an input.txt it exits 0 and writes nothing. Plain WASI preview 1,
;; relying on the sandbox ABI's fixed preopens: fd 3 is /input, fd 4 is /output.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: iovec {ptr, len}; 8: bytes read/written; 12: opened fd;
  ;; 16: "input.txt"; 32: "echo.txt"; 1024..65536: data buffer.
  (data (i32.const 16) "input.txt")
  (data (i32.const 32) "echo.txt")

  ;; Writes buffer[1024 .. 1024+len) to fd, looping over short writes.
  (func $write_all (param $fd i32) (param $len i32)
    (local $done i32)
    (block $finished
      (loop $more
        (br_if $finished (i32.ge_u (local.get $done) (local.get $len)))
        (i32.store (i32.const 0) (i32.add (i32.const 1024) (local.get $done)))
        (i32.store (i32.const 4) (i32.sub (local.get $len) (local.get $done)))
        (br_if $finished
          (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $finished (i32.eqz (i32.load (i32.const 8))))
        (local.set $done (i32.add (local.get $done) (i32.load (i32.const 8))))
        (br $more))))

  (func (export "_start")
    (local $in i32) (local $out i32) (local $n i32)
    ;; open /input/input.txt for reading (rights: fd_read = 2)
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 9)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (return)))
    (local.set $in (i32.load (i32.const 12)))
    ;; create /output/echo.txt (oflags: creat|trunc = 9; rights: fd_write = 64)
    (local.set $out (i32.const -1))
    (if (i32.eqz (call $path_open (i32.const 4) (i32.const 0) (i32.const 32) (i32.const 8)
          (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12)))
      (then (local.set $out (i32.load (i32.const 12)))))
    (block $eof
      (loop $read
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 64512))
        (br_if $eof (call $fd_read (local.get $in) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (call $write_all (i32.const 1) (local.get $n))
        (if (i32.ge_s (local.get $out) (i32.const 0))
          (then (call $write_all (local.get $out) (local.get $n))))
        (br $read)))))
