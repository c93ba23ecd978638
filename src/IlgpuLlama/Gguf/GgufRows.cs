using System.Runtime.InteropServices;
using IlgpuLlama.Kernels;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Gguf;

/// <summary>Reading rows of GGUF tensors as fp32 values, exactly as ggml's dequantisation gives them.</summary>
public static class GgufRows
{
    /// <summary>The safetensors dtype of a plain ggml type (F32, F16, BF16), or null for a block type.</summary>
    public static SafetensorsDType? PlainType(GgmlType type) => type switch
    {
        GgmlType.F32 => SafetensorsDType.F32,
        GgmlType.F16 => SafetensorsDType.F16,
        GgmlType.BF16 => SafetensorsDType.BF16,
        _ => null,
    };

    /// <summary>
    /// Dequantises one row of <paramref name="type"/> (its bytes in <paramref name="src"/>) into
    /// <paramref name="dst"/>, bit for bit as ggml's <c>dequantize_row_*</c> (and to_float for F16/BF16).
    /// </summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (PlainType(type) is { } plain)
        {
            DTypeConversion.ToF32(src, plain, dst);
            return;
        }
        switch (type)
        {
            case GgmlType.Q8_0:
                for (int b = 0; b < dst.Length / 32; b++)
                {
                    var block = src.Slice(b * 34, 34);
                    float d = (float)WeightFormat.Fp16.Decode(MemoryMarshal.Read<ushort>(block));
                    for (int j = 0; j < 32; j++)
                        dst[b * 32 + j] = (sbyte)block[2 + j] * d;
                }
                break;
            case GgmlType.Q4_0:
                for (int b = 0; b < dst.Length / 32; b++)
                {
                    var block = src.Slice(b * 18, 18);
                    float d = (float)WeightFormat.Fp16.Decode(MemoryMarshal.Read<ushort>(block));
                    for (int j = 0; j < 16; j++)
                    {
                        dst[b * 32 + j] = ((block[2 + j] & 0x0F) - 8) * d;
                        dst[b * 32 + j + 16] = ((block[2 + j] >> 4) - 8) * d;
                    }
                }
                break;
            case GgmlType.Q4_K:
                KQuants.DequantizeRow(KQuantType.Q4_K, src, dst);
                break;
            case GgmlType.Q5_K:
                KQuants.DequantizeRow(KQuantType.Q5_K, src, dst);
                break;
            case GgmlType.Q6_K:
                KQuants.DequantizeRow(KQuantType.Q6_K, src, dst);
                break;
            default:
                throw new NotSupportedException($"ggml type {GgmlTypes.Name(type)} is not read by this engine");
        }
    }

    /// <summary>
    /// Splits one row of ggml blocks of <paramref name="format"/>'s own type into the device's planes:
    /// quants contiguous, side words (scales) apart. Returns the index of the first block whose scales
    /// are not finite fp16 values, or -1.
    /// </summary>
    public static int SplitBlocks(BlockQuantFormat format, ReadOnlySpan<byte> src, Span<byte> quants, Span<ushort> side)
    {
        int qb = format.QuantBytesPerBlock, sw = format.SideWords, bb = format.BytesPerBlock, bad = -1;
        for (int b = 0; b < side.Length / sw; b++)
        {
            var words = side.Slice(b * sw, sw);
            format.FromGgml(src.Slice(b * bb, bb), quants.Slice(b * qb, qb), words);
            if (bad < 0 && !format.ScalesFinite(words))
                bad = b;
        }
        return bad;
    }

    /// <summary>The ggml type whose blocks are <paramref name="format"/>'s, or null.</summary>
    public static GgmlType? BlockType(WeightFormat format) =>
        format is BlockQuantFormat q && Enum.TryParse<GgmlType>(q.GgmlName, out var type) ? type : null;
}
