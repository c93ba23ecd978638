namespace IlgpuLlama.Kernels;

/// <summary>
/// The layout of one layer's K (or V) cache, written once and used by the kernels and the CPU
/// references alike: fp16 values [slots, kv_heads, max_seq, head_dim], so one position of one
/// head is head_dim contiguous halves (what attention reads per key) and a slot's keys of one
/// head are contiguous (what the split-K walk streams).
/// </summary>
public struct KvCacheLayout
{
    /// <summary>Key/value heads.</summary>
    public int KvHeads;

    /// <summary>Positions per slot.</summary>
    public int MaxSeq;

    /// <summary>Values per head.</summary>
    public int HeadDim;

    /// <summary>Creates a layout.</summary>
    public KvCacheLayout(int kvHeads, int maxSeq, int headDim)
    {
        KvHeads = kvHeads;
        MaxSeq = maxSeq;
        HeadDim = headDim;
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
    public AttentionShape(int heads, int kvHeads, int headDim, int maxSeq)
    {
        Heads = heads;
        Cache = new KvCacheLayout(kvHeads, maxSeq, headDim);
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
