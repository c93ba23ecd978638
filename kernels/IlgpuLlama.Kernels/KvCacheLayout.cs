namespace IlgpuLlama.Kernels;

/// <summary>What the KV cache stores per value.</summary>
public enum KvCacheType
{
    /// <summary>fp16 (2 B): the default, the P100's design point; keys and values rounded to 11 significant bits.</summary>
    Fp16,

    /// <summary>
    /// fp32 (4 B): twice the memory and attention traffic, no rounding of keys and values; for
    /// evaluation runs (log-probabilities against a float64 reference) rather than serving.
    /// </summary>
    Fp32,
}

/// <summary>Names and sizes of <see cref="KvCacheType"/>.</summary>
public static class KvCacheTypes
{
    /// <summary>The name on the command line and in reports: fp16, fp32.</summary>
    public static string Name(this KvCacheType type) => type switch
    {
        KvCacheType.Fp16 => "fp16",
        KvCacheType.Fp32 => "fp32",
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown KV-cache type"),
    };

    /// <summary>Bytes per cached value.</summary>
    public static int Bytes(this KvCacheType type) => type == KvCacheType.Fp32 ? 4 : 2;

    /// <summary>Every type, in order.</summary>
    public static IReadOnlyList<KvCacheType> All { get; } = [KvCacheType.Fp16, KvCacheType.Fp32];

    /// <summary>The type named <paramref name="name"/> (case-insensitive), or null.</summary>
    public static KvCacheType? Parse(string name) => All.Cast<KvCacheType?>().FirstOrDefault(t => string.Equals(t!.Value.Name(), name, StringComparison.OrdinalIgnoreCase));
}

/// <summary>
/// What a KV cache stores, as a compile-time choice of the attention kernel: each type is its own
/// specialisation (attention, attention_fp32), so the fp16 kernel carries no fp32 code and keeps its
/// registers. The writers branch on <see cref="KvCacheLayout.Words"/> at run time instead, in their
/// epilogue store: the static check shows the same registers for kv_append (+1) and the q/k/v kernels,
/// and 67 -> 78 for the persistent decode_layer_*_b1 kernels, at the same occupancy (shared memory limits it).
/// </summary>
public interface IKvCacheValues
{
    /// <summary>16-bit words per value.</summary>
    int Words { get; }

    /// <summary>Whether attention sums each q.k score in float64 (fp32 cache, float64 accumulation: <c>attention_fp32_f64</c>).</summary>
    bool Float64Scores { get; }
}

/// <summary>An fp16 cache.</summary>
public struct Fp16CacheValues : IKvCacheValues
{
    public readonly int Words => 1;

    public readonly bool Float64Scores => false;
}

/// <summary>An fp32 cache.</summary>
public struct Fp32CacheValues : IKvCacheValues
{
    public readonly int Words => 2;

    public readonly bool Float64Scores => false;
}

/// <summary>An fp32 cache whose scores attention sums in float64, scaled in float64 (the evaluation configuration with float64 accumulation).</summary>
public struct Fp32CacheValuesF64Scores : IKvCacheValues
{
    public readonly int Words => 2;

    public readonly bool Float64Scores => true;
}

/// <summary>
/// The layout of one layer's K (or V) cache, written once and used by the kernels and the CPU
/// references alike: values [slots, kv_heads, max_seq, head_dim], so one position of one head is
/// head_dim contiguous values (what attention reads per key) and a slot's keys of one head are
/// contiguous (what the split-K walk streams). The buffer is 16-bit words: a value is one word
/// (fp16) or two (fp32, low word first), <see cref="Words"/> per value; offsets count values.
/// </summary>
public struct KvCacheLayout
{
    /// <summary>Key/value heads.</summary>
    public int KvHeads;

    /// <summary>Positions per slot.</summary>
    public int MaxSeq;

    /// <summary>Values per head.</summary>
    public int HeadDim;

    /// <summary>16-bit words per value: 1 (fp16) or 2 (fp32).</summary>
    public int Words;

    /// <summary>Creates a layout.</summary>
    public KvCacheLayout(int kvHeads, int maxSeq, int headDim, KvCacheType type = KvCacheType.Fp16)
    {
        KvHeads = kvHeads;
        MaxSeq = maxSeq;
        HeadDim = headDim;
        Words = type.Bytes() / 2;
    }

    /// <summary>What a value is stored as.</summary>
    public readonly KvCacheType Type => Words == 2 ? KvCacheType.Fp32 : KvCacheType.Fp16;

    /// <summary>
    /// Stores <paramref name="value"/> at value offset <paramref name="offset"/> of
    /// <paramref name="cache"/> (16-bit words): fp16 bits as <see cref="DeviceMath.ToKvHalfBits"/>
    /// rounds them, or the fp32 bits as two words, low first (little-endian, so a 32-bit view of
    /// the buffer reads the float back).
    /// </summary>
    public readonly void Store(ArrayView<ushort> cache, int offset, float value)
    {
        if (Words == 2)
        {
            uint bits = Interop.FloatAsInt(value);
            cache[2 * offset] = (ushort)bits;
            cache[2 * offset + 1] = (ushort)(bits >> 16);
        }
        else
        {
            cache[offset] = DeviceMath.ToKvHalfBits(value);
        }
    }

    /// <summary>Index of key row (slot, head, pos) in units of rows of head_dim values.</summary>
    public readonly int Row(int slot, int head, int pos) => (slot * KvHeads + head) * MaxSeq + pos;

    /// <summary>Index of value (slot, head, pos, d).</summary>
    public readonly int Offset(int slot, int head, int pos, int d) => Row(slot, head, pos) * HeadDim + d;

    /// <summary>Values one slot occupies: kv_heads x max_seq x head_dim.</summary>
    public readonly long SlotElements => (long)KvHeads * MaxSeq * HeadDim;

    /// <summary>Values a cache of <paramref name="slots"/> slots occupies.</summary>
    public readonly long Elements(long slots) => slots * SlotElements;

    /// <summary>Values per cached token of one layer: kv_heads x head_dim.</summary>
    public readonly int TokenElements => KvHeads * HeadDim;

    /// <summary>16-bit words a cache of <paramref name="slots"/> slots occupies (the buffer's length).</summary>
    public readonly long WordsFor(long slots) => Elements(slots) * Words;
}

/// <summary>
/// The attention geometry of a model bound once: query heads, and the KV-cache layout (kv heads,
/// positions per slot, head_dim). GQA query head h reads kv head h / (heads / kv_heads).
/// </summary>
public struct AttentionShape
{
    /// <summary>Query heads.</summary>
    public int Heads;

    /// <summary>Layout of each layer's K and V cache.</summary>
    public KvCacheLayout Cache;

    /// <summary>Score scale, 1 / sqrt(head_dim).</summary>
    public float Scale;

    /// <summary>Creates the shape; the scale is 1/sqrt(head_dim).</summary>
    public AttentionShape(int heads, int kvHeads, int headDim, int maxSeq, KvCacheType cacheType = KvCacheType.Fp16)
    {
        Heads = heads;
        Cache = new KvCacheLayout(kvHeads, maxSeq, headDim, cacheType);
        Scale = 1f / MathF.Sqrt(headDim);
    }

    /// <summary>Key/value heads.</summary>
    public readonly int KvHeads => Cache.KvHeads;

    /// <summary>Values per head.</summary>
    public readonly int HeadDim => Cache.HeadDim;

    /// <summary>Positions per cache slot.</summary>
    public readonly int MaxSeq => Cache.MaxSeq;

    /// <summary>Width of q and of the attention output: heads x head_dim.</summary>
    public readonly int QDim => Heads * Cache.HeadDim;

    /// <summary>Width of k and v: kv_heads x head_dim.</summary>
    public readonly int KvDim => Cache.KvHeads * Cache.HeadDim;

    /// <summary>Query heads per kv head.</summary>
    public readonly int GroupHeads => Heads / Cache.KvHeads;
}
