;; The `transform` connector as a WASI command: answer {"output": V} where V is config.value.
;;
;; The hub renders a node's templates before any sandbox runs, so a transform attempt only has to
;; hand back the rendered value. Doing that here, in the WASM sandbox (≈ 0.5 ms an attempt), instead
;; of a forked Python process (≈ 4 ms) keeps every node sandboxed and takes most of the cost out of
;; chains of light nodes.
;;
;; stdin is the sandbox payload {"config": {"value": V, ...}, "input": ..., "context": ...}. V is
;; copied byte for byte (it is already JSON), found with a small scanner that knows strings,
;; escapes and nesting. A payload without config.value answers {"output": null}; one that is not a
;; JSON object answers a non-retryable error. Growing memory past the sandbox's limit traps, which
;; the host reports as the memory limit.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)

  ;; 0..8: iovec, 8..12: count; 64..: constant strings; the payload from 65536 on.
  (data (i32.const 64) "config")           ;; 6 bytes
  (data (i32.const 80) "value")            ;; 5 bytes
  (data (i32.const 96) "{\"output\":")     ;; 10 bytes
  (data (i32.const 112) "}")               ;; 1 byte
  (data (i32.const 128) "{\"output\":null}") ;; 15 bytes
  (data (i32.const 160) "{\"error\":{\"message\":\"transform: the payload is not a JSON object\",\"retryable\":false}}") ;; 85 bytes

  (global $buf i32 (i32.const 65536))
  (global $end (mut i32) (i32.const 65536))   ;; one past the payload's last byte (a 0 is stored there)
  (global $vend (mut i32) (i32.const 0))      ;; end of the value $member found

  ;; Read all of stdin to $buf, growing memory as needed; $end marks its end (NUL-terminated).
  (func $read_all
    (local $n i32)
    (loop $more
      ;; keep at least 64 KiB + 1 free past $end
      (if (i32.gt_u (i32.add (global.get $end) (i32.const 65537))
                    (i32.mul (memory.size) (i32.const 65536)))
        (then (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))))
      (i32.store (i32.const 0) (global.get $end))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
      (local.set $n (i32.load (i32.const 8)))
      (global.set $end (i32.add (global.get $end) (local.get $n)))
      (br_if $more (local.get $n)))
    (i32.store8 (global.get $end) (i32.const 0)))

  (func $byte (param $p i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $p) (global.get $end))
      (then (i32.load8_u (local.get $p)))
      (else (i32.const 0))))

  ;; Skip JSON whitespace.
  (func $ws (param $p i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (local.set $c (call $byte (local.get $p)))
        (br_if $done (i32.eqz (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32))
                                              (i32.eq (local.get $c) (i32.const 9)))
                                      (i32.or (i32.eq (local.get $c) (i32.const 10))
                                              (i32.eq (local.get $c) (i32.const 13))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; $p at an opening quote: one past the closing quote, or -1.
  (func $skip_string (param $p i32) (result i32)
    (local $c i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (local.set $c (call $byte (local.get $p)))
      (if (i32.eqz (local.get $c)) (then (return (i32.const -1))))
      (if (i32.eq (local.get $c) (i32.const 34)) (then (return (i32.add (local.get $p) (i32.const 1)))))
      (if (i32.eq (local.get $c) (i32.const 92))  ;; backslash: the next byte is escaped
        (then (local.set $p (i32.add (local.get $p) (i32.const 1)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))
    (i32.const -1))

  ;; The end of the JSON value at $p (after whitespace), or -1 when it is malformed.
  (func $skip_value (param $p i32) (result i32)
    (local $c i32) (local $depth i32)
    (local.set $p (call $ws (local.get $p)))
    (local.set $c (call $byte (local.get $p)))
    (if (i32.eq (local.get $c) (i32.const 34)) (then (return (call $skip_string (local.get $p)))))
    (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
      (then
        (loop $next
          (local.set $c (call $byte (local.get $p)))
          (if (i32.eqz (local.get $c)) (then (return (i32.const -1))))
          (if (i32.eq (local.get $c) (i32.const 34))
            (then
              (local.set $p (call $skip_string (local.get $p)))
              (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
              (br $next)))
          (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
            (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
          (if (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93)))
            (then
              (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))
              (if (i32.eqz (local.get $depth)) (then (return (i32.add (local.get $p) (i32.const 1)))))))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br $next))))
    ;; a number, true, false or null: up to the next delimiter
    (block $done
      (loop $next
        (local.set $c (call $byte (local.get $p)))
        (br_if $done (i32.eqz (local.get $c)))
        (br_if $done (i32.eq (local.get $c) (i32.const 44)))
        (br_if $done (i32.eq (local.get $c) (i32.const 125)))
        (br_if $done (i32.eq (local.get $c) (i32.const 93)))
        (br_if $done (i32.eq (call $ws (local.get $p)) (i32.add (local.get $p) (i32.const 1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; Whether the $len bytes at $a and $b are equal.
  (func $equal (param $a i32) (param $b i32) (param $len i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; The start of member $name of the object at $p (its end in $vend); -1 when absent, -2 when $p
  ;; is not an object.
  (func $member (param $p i32) (param $name i32) (param $len i32) (result i32)
    (local $key i32) (local $after i32) (local $value i32) (local $stop i32)
    (local.set $p (call $ws (local.get $p)))
    (if (i32.ne (call $byte (local.get $p)) (i32.const 123)) (then (return (i32.const -2))))
    (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
    (loop $next
      (if (i32.ne (call $byte (local.get $p)) (i32.const 34)) (then (return (i32.const -1))))
      (local.set $key (i32.add (local.get $p) (i32.const 1)))
      (local.set $after (call $skip_string (local.get $p)))
      (if (i32.lt_s (local.get $after) (i32.const 0)) (then (return (i32.const -2))))
      (local.set $p (call $ws (local.get $after)))
      (if (i32.ne (call $byte (local.get $p)) (i32.const 58)) (then (return (i32.const -2))))
      (local.set $value (call $ws (i32.add (local.get $p) (i32.const 1))))
      (local.set $stop (call $skip_value (local.get $value)))
      (if (i32.lt_s (local.get $stop) (i32.const 0)) (then (return (i32.const -2))))
      (if (i32.and (i32.eq (i32.sub (i32.sub (local.get $after) (local.get $key)) (i32.const 1)) (local.get $len))
                   (call $equal (local.get $key) (local.get $name) (local.get $len)))
        (then (global.set $vend (local.get $stop)) (return (local.get $value))))
      (local.set $p (call $ws (local.get $stop)))
      (if (i32.eq (call $byte (local.get $p)) (i32.const 44))
        (then (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))))
      (br $next))
    (i32.const -1))

  ;; Write $len bytes at $ptr to stdout; trap when stdout refuses (the host reports why).
  (func $write (param $ptr i32) (param $len i32)
    (loop $more
      (if (i32.eqz (local.get $len)) (then (return)))
      (i32.store (i32.const 0) (local.get $ptr))
      (i32.store (i32.const 4) (local.get $len))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
      (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
      (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
      (br $more)))

  (func (export "_start")
    (local $config i32) (local $value i32)
    (call $read_all)
    (local.set $config (call $member (global.get $buf) (i32.const 64) (i32.const 6)))
    (if (i32.eq (local.get $config) (i32.const -2))
      (then (call $write (i32.const 160) (i32.const 85)) (return)))
    (if (i32.lt_s (local.get $config) (i32.const 0))
      (then (call $write (i32.const 128) (i32.const 15)) (return)))
    (local.set $value (call $member (local.get $config) (i32.const 80) (i32.const 5)))
    (if (i32.eq (local.get $value) (i32.const -2))
      (then (call $write (i32.const 160) (i32.const 85)) (return)))
    (if (i32.lt_s (local.get $value) (i32.const 0))
      (then (call $write (i32.const 128) (i32.const 15)) (return)))
    (call $write (i32.const 96) (i32.const 10))
    (call $write (local.get $value) (i32.sub (global.get $vend) (local.get $value)))
    (call $write (i32.const 112) (i32.const 1))))
