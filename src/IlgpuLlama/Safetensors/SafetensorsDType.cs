namespace IlgpuLlama.Safetensors;

/// <summary>
/// Element types this engine can read the data of. Every other safetensors dtype
/// (I64, F64, U8, F8_E4M3, ...) is parsed as <see cref="Other"/> so that a file holding an
/// extra tensor of such a type still opens; only asking for that tensor's data fails.
/// </summary>
public enum SafetensorsDType
{
    /// <summary>bfloat16.</summary>
    BF16,

    /// <summary>IEEE 754 binary16.</summary>
    F16,

    /// <summary>IEEE 754 binary32.</summary>
    F32,

    /// <summary>Signed bytes (Q8_0 quants of a quantised checkpoint).</summary>
    I8,

    /// <summary>Unsigned bytes (packed Q4_0 quants of a quantised checkpoint).</summary>
    U8,

    /// <summary>Any dtype whose data this engine does not read; the original name is kept in <see cref="TensorInfo.DTypeName"/>.</summary>
    Other,
}

/// <summary>Size and name helpers for <see cref="SafetensorsDType"/> and raw safetensors dtype strings.</summary>
public static class SafetensorsDTypes
{
    /// <summary>Bytes per element of a supported dtype.</summary>
    /// <exception cref="ArgumentOutOfRangeException">For <see cref="SafetensorsDType.Other"/>, whose size depends on the original name.</exception>
    public static int SizeOf(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BF16 => 2,
        SafetensorsDType.F16 => 2,
        SafetensorsDType.F32 => 4,
        SafetensorsDType.I8 or SafetensorsDType.U8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype,
            "only BF16, F16, F32, I8 and U8 have a fixed size here; use BitsOf(name) for other dtypes"),
    };

    /// <summary>The dtype string the safetensors header uses for a supported dtype.</summary>
    public static string ToName(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BF16 => "BF16",
        SafetensorsDType.F16 => "F16",
        SafetensorsDType.F32 => "F32",
        SafetensorsDType.I8 => "I8",
        SafetensorsDType.U8 => "U8",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Other has no single name"),
    };

    /// <summary>Maps a header dtype string to the enum; anything but BF16/F16/F32/I8/U8 becomes <see cref="SafetensorsDType.Other"/>.</summary>
    public static SafetensorsDType Parse(string name) => name switch
    {
        "BF16" => SafetensorsDType.BF16,
        "F16" => SafetensorsDType.F16,
        "F32" => SafetensorsDType.F32,
        "I8" => SafetensorsDType.I8,
        "U8" => SafetensorsDType.U8,
        _ => SafetensorsDType.Other,
    };

    /// <summary>
    /// Bits per element for every dtype the safetensors specification defines, or null for a
    /// name it does not define. Bits rather than bytes because the spec includes sub-byte types (F4, F6).
    /// </summary>
    public static int? BitsOf(string name) => name switch
    {
        "BOOL" or "U8" or "I8" or "F8_E5M2" or "F8_E4M3" or "F8_E8M0" => 8,
        "I16" or "U16" or "F16" or "BF16" => 16,
        "I32" or "U32" or "F32" => 32,
        "I64" or "U64" or "F64" or "C64" => 64,
        "F6_E2M3" or "F6_E3M2" => 6,
        "F4" => 4,
        _ => null,
    };
}
