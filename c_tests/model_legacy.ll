; A model in the shape onnx-mlir emitted before global constructors
; (src/Conversion/KrnlToLLVM/ConvertKrnlToLLVM.cpp, --store-constants-to-file):
; every inference calls omLoadConstantsFromFile, which calls omMMapBinaryFile
; (ensure loaded) and omGetExternalConstantAddr for each constant. Nothing
; ever releases the buffer.

@om_external_constant_packedConst = internal global ptr null
@om_external_constant_data_a = internal global ptr null, align 4096
@om_external_constant_data_b = internal global ptr null, align 4096
@om_external_constant_data_c = internal global ptr null, align 4096
@om_external_constant_offset_a = internal constant i64 0
@om_external_constant_offset_b = internal constant i64 8192
@om_external_constant_offset_c = internal constant i64 4294967296
@om_external_constant_filename = internal constant [20 x i8] c"model.constants.bin\00"
@om_external_constant_filesize = internal constant i64 4294971392
@om_external_constant_isLE = internal constant i8 1

declare i1 @omMMapBinaryFile(ptr, ptr, i64, i64)
declare void @omGetExternalConstantAddr(ptr, ptr, i64)
declare void @model_compute(ptr, ptr, ptr, ptr)

define internal i1 @omLoadConstantsFromFile() {
entry:
  %size = load i64, ptr @om_external_constant_filesize
  %le8 = load i8, ptr @om_external_constant_isLE
  %le = zext i8 %le8 to i64
  %ok = call i1 @omMMapBinaryFile(ptr @om_external_constant_packedConst, ptr @om_external_constant_filename, i64 %size, i64 %le)
  br i1 %ok, label %addrs, label %fail
addrs:
  %oa = load i64, ptr @om_external_constant_offset_a
  call void @omGetExternalConstantAddr(ptr @om_external_constant_data_a, ptr @om_external_constant_packedConst, i64 %oa)
  %ob = load i64, ptr @om_external_constant_offset_b
  call void @omGetExternalConstantAddr(ptr @om_external_constant_data_b, ptr @om_external_constant_packedConst, i64 %ob)
  %oc = load i64, ptr @om_external_constant_offset_c
  call void @omGetExternalConstantAddr(ptr @om_external_constant_data_c, ptr @om_external_constant_packedConst, i64 %oc)
  ret i1 true
fail:
  ret i1 false
}

; Entry point: false if the constants could not be loaded.
define i1 @run_main_graph(ptr %out) {
entry:
  %ok = call i1 @omLoadConstantsFromFile()
  br i1 %ok, label %run, label %fail
run:
  %a = load ptr, ptr @om_external_constant_data_a
  %b = load ptr, ptr @om_external_constant_data_b
  %c = load ptr, ptr @om_external_constant_data_c
  call void @model_compute(ptr %out, ptr %a, ptr %b, ptr %c)
  ret i1 true
fail:
  ret i1 false
}
