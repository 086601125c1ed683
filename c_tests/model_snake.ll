; A model in the shape onnx-mlir emits today (global constructor style):
; the same model calling this library's own names: om_load_constants_from_file,
; om_free_constant_buffer, om_get_external_constant_addr.
; The entry point only reads the constants.

@om_external_constant_packedConst = internal global ptr null
@om_external_constant_data_a = internal global ptr null, align 4096
@om_external_constant_data_b = internal global ptr null, align 4096
@om_external_constant_data_c = internal global ptr null, align 4096
@om_external_constant_filename = internal constant [20 x i8] c"model.constants.bin\00"
@om_external_constant_filesize = internal constant i64 4294971392
@om_external_constant_isLE = internal constant i8 1

@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @omLoadConstantDataCtor, ptr null }]
@llvm.global_dtors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @omUnloadConstantDataDtor, ptr null }]

declare i1 @om_load_constants_from_file(ptr, ptr, i64, i64)
declare i1 @om_free_constant_buffer(ptr)
declare void @om_get_external_constant_addr(ptr, ptr, i64)
declare void @model_compute(ptr, ptr, ptr, ptr)

define internal void @omLoadConstantDataCtor() {
entry:
  %le8 = load i8, ptr @om_external_constant_isLE
  %le = zext i8 %le8 to i64
  %ok = call i1 @om_load_constants_from_file(ptr @om_external_constant_packedConst, ptr @om_external_constant_filename, i64 4294971392, i64 %le)
  br i1 %ok, label %addrs, label %done
addrs:
  call void @om_get_external_constant_addr(ptr @om_external_constant_data_a, ptr @om_external_constant_packedConst, i64 0)
  call void @om_get_external_constant_addr(ptr @om_external_constant_data_b, ptr @om_external_constant_packedConst, i64 8192)
  call void @om_get_external_constant_addr(ptr @om_external_constant_data_c, ptr @om_external_constant_packedConst, i64 4294967296)
  br label %done
done:
  ret void
}

define internal void @omUnloadConstantDataDtor() {
entry:
  %ok = call i1 @om_free_constant_buffer(ptr @om_external_constant_packedConst)
  ret void
}

; Entry point: false if the constructor could not load the constants.
define i1 @run_main_graph(ptr %out) {
entry:
  %base = load ptr, ptr @om_external_constant_packedConst
  %loaded = icmp ne ptr %base, null
  br i1 %loaded, label %run, label %fail
run:
  %a = load ptr, ptr @om_external_constant_data_a
  %b = load ptr, ptr @om_external_constant_data_b
  %c = load ptr, ptr @om_external_constant_data_c
  call void @model_compute(ptr %out, ptr %a, ptr %b, ptr %c)
  ret i1 true
fail:
  ret i1 false
}
