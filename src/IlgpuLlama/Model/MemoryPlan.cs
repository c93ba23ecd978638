using IlgpuLlama.Device;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Model;

/// <summary>
/// Sizes of the engine's activation workspace that depend on the kernels' launch shapes as well
/// as on the model: how many prompt tokens one prefill pass holds, how many key splits decode
/// attention may use, and the partial-result counts of the logits reduction and top-k.
/// </summary>
/// <param name="MaxBatch">sequences decoded together (B)</param>
/// <param name="MaxSeq">positions per sequence in the KV cache (S)</param>
/// <param name="PrefillTokens">prompt tokens one prefill pass processes (T); longer prompts are chunked</param>
/// <param name="AttentionSplits">key splits per decode attention row</param>
/// <param name="LogitsParts">groups per row of the logits reduction</param>
/// <param name="TopKParts">groups per row of top-k</param>
/// <param name="TopKCapacity">candidates top-k returns per row (C)</param>
public sealed record WorkspaceShape(int MaxBatch, int MaxSeq, int PrefillTokens, int AttentionSplits, int LogitsParts, int TopKParts, int TopKCapacity)
{
    /// <summary>Default prefill capacity: every sequence's full context, at most 2048 tokens per pass.</summary>
    public static int DefaultPrefillTokens(int maxBatch, int maxSeq) => Math.Min(maxBatch * maxSeq, 2048);

    /// <summary>Derives the shape from the model, the limits and the kernels' tuning.</summary>
    public static WorkspaceShape For(LlamaConfig config, int maxBatch, int maxSeq, KernelTuning tuning, int? prefillTokens = null)
    {
        if (maxBatch < 1 || maxBatch > MatVecKernels.MaxBatch)
            throw new ArgumentException($"--max-batch-size {maxBatch} must be between 1 and {MatVecKernels.MaxBatch} (the decode kernels process up to {MatVecKernels.MaxBatch} sequences per pass)");
        if (maxSeq < 1 || maxSeq > config.MaxPositionEmbeddings)
            throw new ArgumentException($"--max-seq-len {maxSeq} must be between 1 and the model's max_position_embeddings {config.MaxPositionEmbeddings}");
        int t = prefillTokens ?? DefaultPrefillTokens(maxBatch, maxSeq);
        if (t < 1)
            throw new ArgumentException($"--prefill-chunk {t} must be at least 1");
        int logitsParts = Math.Max(1, (config.VocabSize + tuning.LogitsSlice - 1) / tuning.LogitsSlice);
        int topKParts = Math.Max(1, (config.VocabSize + tuning.TopKSlice - 1) / tuning.TopKSlice);
        int topKCapacity = Math.Min(Math.Min(64, tuning.TopKSlice / topKParts), config.VocabSize);
        return new WorkspaceShape(maxBatch, maxSeq, t, LlamaKernels.AttentionSplits(maxSeq, tuning.AttentionMinChunk, tuning.AttentionGroup), logitsParts, topKParts, topKCapacity);
    }
}

/// <summary>One line of the memory formula.</summary>
public sealed record MemoryLine(MemoryCategory Category, string Item, string Formula, long Bytes);

/// <summary>
/// The memory formula as code: what the engine must hold on the device for a model at a given
/// batch and context, computed in closed form from the configuration (not by summing the
/// engine's buffers, so a test can compare the two).
/// <para>weights = parameters x bytes per weight (tied embeddings counted once);</para>
/// <para>KV cache = batch x seq x (2 x layers x kv_heads x head_dim x 2 B);</para>
/// <para>activations = the workspace itemised in <see cref="ActivationLines"/>.</para>
/// </summary>
public sealed class MemoryPlan
{
    /// <summary>Bytes per 16-bit weight.</summary>
    public const int BytesPerWeight = 2;

    /// <summary>Bytes per cached K or V element (fp16).</summary>
    public const int BytesPerCacheElement = 2;

    /// <summary>Computes the plan.</summary>
    public MemoryPlan(LlamaConfig config, WorkspaceShape shape)
    {
        Config = config;
        Shape = shape;
        long h = config.HiddenSize, i = config.IntermediateSize, v = config.VocabSize, q = config.QDim, kv = config.KvDim;
        long layers = config.NumHiddenLayers;
        // Per layer: q, k, v, o projections, gate/up/down, two norms. Embedding once; lm_head only when untied; final norm.
        ParameterCount = v * h * (config.TieWordEmbeddings ? 1 : 2) + layers * (h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h) + h;
        WeightBytes = ParameterCount * BytesPerWeight;
        KvBytesPerToken = 2L * layers * kv * BytesPerCacheElement;
        KvCacheBytes = (long)shape.MaxBatch * shape.MaxSeq * KvBytesPerToken;
        ActivationLines = BuildActivationLines(config, shape);
        ActivationBytes = ActivationLines.Sum(l => l.Bytes);
    }

    /// <summary>The model configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>Batch, context and kernel-dependent workspace sizes.</summary>
    public WorkspaceShape Shape { get; }

    /// <summary>Parameters, tied embeddings counted once.</summary>
    public long ParameterCount { get; }

    /// <summary>parameters x 2 B.</summary>
    public long WeightBytes { get; }

    /// <summary>2 (K and V) x layers x kv_heads x head_dim x 2 B.</summary>
    public long KvBytesPerToken { get; }

    /// <summary>batch x seq x KV bytes per token.</summary>
    public long KvCacheBytes { get; }

    /// <summary>Sum of <see cref="ActivationLines"/>.</summary>
    public long ActivationBytes { get; }

    /// <summary>weights + KV cache + activations.</summary>
    public long TotalBytes => WeightBytes + KvCacheBytes + ActivationBytes;

    /// <summary>The itemised activation workspace.</summary>
    public IReadOnlyList<MemoryLine> ActivationLines { get; }

    /// <summary>The largest KV cache (in token slots, batch x seq) that fits beside weights and workspace in <paramref name="deviceBytes"/>.</summary>
    public long MaxCacheTokens(long deviceBytes) => Math.Max(0, (deviceBytes - WeightBytes - ActivationBytes) / KvBytesPerToken);

    // Derivation. The forward pass keeps the residual stream and every intermediate of one layer
    // for T = prefill tokens at once (decode uses the first B rows of the same buffers):
    //   x, xb (normed)            2 x T x hidden x 4
    //   q, attention output       2 x T x (heads x head_dim) x 4
    //   k, v (before the cache)   2 x T x (kv_heads x head_dim) x 4
    //   gate, up (MLP)            2 x T x intermediate x 4
    // Logits are only ever computed for at most B rows (last prompt token / one decode step):
    //   logits B x vocab x 4, final-norm input B x hidden x 4.
    // RoPE table: seq x head_dim/2 x (cos, sin) x 4 = seq x head_dim x 4.
    // Decode attention splits: partial accumulators B x heads x splits x head_dim x 4, partial
    //   (max, sum) B x heads x splits x 2 x 4, completion counters B x kv_heads x 4.
    // Token bookkeeping (int32): prefill tokens/positions/slots 3 x T x 4, last-row index B x 4,
    //   decode tokens/positions/slots 3 x B x 4.
    // Sampling: logits-reduction partials (max, sum, index) 3 x B x parts x 4, counters B x 4,
    //   results (argmax, max, sum) 3 x B x 4; top-k partials B x parts_k x C x 8, counters B x 4,
    //   results B x C x 8; repetition-penalty flags B x vocab x 1.
    static List<MemoryLine> BuildActivationLines(LlamaConfig c, WorkspaceShape s)
    {
        long t = s.PrefillTokens, b = s.MaxBatch, h = c.HiddenSize, q = c.QDim, kv = c.KvDim, i = c.IntermediateSize, v = c.VocabSize;
        const MemoryCategory A = MemoryCategory.Activations;
        return
        [
            new(A, "residual x, normed xb", "2 x T x hidden x 4", 2 * t * h * 4),
            new(A, "q, attention output", "2 x T x heads x head_dim x 4", 2 * t * q * 4),
            new(A, "k, v", "2 x T x kv_heads x head_dim x 4", 2 * t * kv * 4),
            new(A, "gate, up", "2 x T x intermediate x 4", 2 * t * i * 4),
            new(A, "logits", "B x vocab x 4", b * v * 4),
            new(A, "last-token hidden", "B x hidden x 4", b * h * 4),
            new(A, "rope table", "seq x head_dim x 4", (long)s.MaxSeq * c.HeadDim * 4),
            new(A, "attention split partials", "B x heads x splits x (head_dim + 2) x 4 + B x kv_heads x 4",
                b * c.NumAttentionHeads * s.AttentionSplits * (c.HeadDim + 2) * 4 + b * c.NumKeyValueHeads * 4),
            new(A, "token bookkeeping", "3 x T x 4 + B x 4 + 3 x B x 4", 3 * t * 4 + b * 4 + 3 * b * 4),
            new(A, "sampling (reduce, top-k, penalty flags)", "B x (3 x parts + 1 + 3) x 4 + B x (parts_k x C + C) x 8 + B x 4 + B x vocab",
                b * (3 * s.LogitsParts + 1 + 3) * 4 + b * (s.TopKParts * s.TopKCapacity + s.TopKCapacity) * 8 + b * 4 + b * v),
        ];
    }
}
