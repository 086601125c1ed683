; The computation shared by the three test models (linked into each model .so).
; Constants, as the model's constants file holds them (little-endian i64):
;   a: 1024 values at offset 0
;   b:  512 values at offset 8192
;   c:  512 values at offset 4 GiB (4294967296), so 64-bit offsets are used
; out[0] = sum(a), out[1] = sum(b[i] * c[i]) (wrapping i64 arithmetic).

define hidden void @model_compute(ptr %out, ptr %a, ptr %b, ptr %c) {
entry:
  br label %sum
sum:
  %i = phi i64 [ 0, %entry ], [ %i.next, %sum ]
  %acc = phi i64 [ 0, %entry ], [ %acc.next, %sum ]
  %pa = getelementptr inbounds i64, ptr %a, i64 %i
  %va = load i64, ptr %pa, align 8
  %acc.next = add i64 %acc, %va
  %i.next = add i64 %i, 1
  %sum.done = icmp eq i64 %i.next, 1024
  br i1 %sum.done, label %dot, label %sum
dot:
  %j = phi i64 [ 0, %sum ], [ %j.next, %dot ]
  %dacc = phi i64 [ 0, %sum ], [ %dacc.next, %dot ]
  %pb = getelementptr inbounds i64, ptr %b, i64 %j
  %pc = getelementptr inbounds i64, ptr %c, i64 %j
  %vb = load i64, ptr %pb, align 8
  %vc = load i64, ptr %pc, align 8
  %prod = mul i64 %vb, %vc
  %dacc.next = add i64 %dacc, %prod
  %j.next = add i64 %j, 1
  %dot.done = icmp eq i64 %j.next, 512
  br i1 %dot.done, label %exit, label %dot
exit:
  store i64 %acc.next, ptr %out, align 8
  %out1 = getelementptr inbounds i64, ptr %out, i64 1
  store i64 %dacc.next, ptr %out1, align 8
  ret void
}
