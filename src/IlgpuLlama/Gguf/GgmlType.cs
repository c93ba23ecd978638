namespace IlgpuLlama.Gguf;

/// <summary>
/// The tensor element types of ggml (ggml.h's <c>enum ggml_type</c>), by their numbers in a GGUF file.
/// Numbers that ggml retired (4, 5, 31-33, 36-38) are absent.
/// </summary>
public enum GgmlType : uint
{
#pragma warning disable CS1591 // the names are ggml's
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
#pragma warning restore CS1591
}

/// <summary>Block shapes of the ggml types, for sizing and validating tensors.</summary>
public static class GgmlTypes
{
    /// <summary>
    /// Values per block and bytes per block of <paramref name="type"/> (ggml's type traits:
    /// <c>blck_size</c> and <c>type_size</c>), or false for a number ggml does not define.
    /// </summary>
    public static bool TryGetBlock(GgmlType type, out int blockValues, out int blockBytes)
    {
        (blockValues, blockBytes) = type switch
        {
            GgmlType.F32 or GgmlType.I32 => (1, 4),
            GgmlType.F16 or GgmlType.BF16 or GgmlType.I16 => (1, 2),
            GgmlType.I8 => (1, 1),
            GgmlType.I64 or GgmlType.F64 => (1, 8),
            GgmlType.Q4_0 => (32, 18),
            GgmlType.Q4_1 => (32, 20),
            GgmlType.Q5_0 => (32, 22),
            GgmlType.Q5_1 => (32, 24),
            GgmlType.Q8_0 => (32, 34),
            GgmlType.Q8_1 => (32, 36),
            GgmlType.IQ4_NL => (32, 18),
            GgmlType.MXFP4 => (32, 17),
            GgmlType.Q2_K => (256, 84),
            GgmlType.Q3_K => (256, 110),
            GgmlType.Q4_K => (256, 144),
            GgmlType.Q5_K => (256, 176),
            GgmlType.Q6_K => (256, 210),
            GgmlType.Q8_K => (256, 292),
            GgmlType.IQ2_XXS => (256, 66),
            GgmlType.IQ2_XS => (256, 74),
            GgmlType.IQ3_XXS => (256, 98),
            GgmlType.IQ1_S => (256, 50),
            GgmlType.IQ3_S => (256, 110),
            GgmlType.IQ2_S => (256, 82),
            GgmlType.IQ4_XS => (256, 136),
            GgmlType.IQ1_M => (256, 56),
            GgmlType.TQ1_0 => (256, 54),
            GgmlType.TQ2_0 => (256, 66),
            _ => (0, 0),
        };
        return blockValues > 0;
    }

    /// <summary>The type's name as ggml prints it (F16, Q4_K), or "type N" for an unknown number.</summary>
    public static string Name(GgmlType type) => Enum.IsDefined(type) ? type.ToString() : $"type {(uint)type}";

    /// <summary>The ggml types whose values this engine reads (converting them to the device format).</summary>
    public static IReadOnlyList<GgmlType> Readable { get; } =
        [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];
}
