using System.Runtime.InteropServices;
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
    /// <summary>Most prompt tokens one prefill pass holds by default (longer prompts are chunked).</summary>
    public const int MaxDefaultPrefillTokens = 2048;

    /// <summary>
    /// Most sampling candidates brought back per row: enough that top-k/top-p/min-p almost always
    /// decide from them (the host falls back to the full row otherwise), few enough to read back cheaply.
    /// </summary>
    public const int MaxSamplingCandidates = 64;

    /// <summary>
    /// Most sequences (KV-cache slots) one model decodes together. Up to <see cref="BatchWidth.Max"/>
    /// one tile of the fused decode matvecs covers a step; wider steps loop over tiles of 4 inside each
    /// launch, so every weight row is read from memory once per step and from cache for the next tiles.
    /// </summary>
    public const int MaxSequences = 64;

    /// <summary>What the KV cache stores per value (fp16 unless asked for).</summary>
    public KvCacheType KvCache { get; init; } = KvCacheType.Fp16;

    /// <summary>Longest context chosen when none is asked for (a longer one must be asked for: it costs KV-cache memory and attention time).</summary>
    public const int DefaultContextCap = 8192;

    /// <summary>
    /// The cap on the CPU accelerator, where memory is not what limits a context: every attention
    /// split of a longer cache is a group of OS threads, which makes each decode step several times
    /// slower (the demo at 2048 positions: 660 ms/step against 145 at 256). Longer contexts work
    /// there when asked for.
    /// </summary>
    public const int DefaultCpuContextCap = 256;

    /// <summary>Default prefill capacity: every sequence's full context, at most <see cref="MaxDefaultPrefillTokens"/> tokens per pass.</summary>
    public static int DefaultPrefillTokens(int maxBatch, int maxSeq) =>
        Math.Max((int)Math.Min((long)maxBatch * maxSeq, MaxDefaultPrefillTokens), MatVecKernels.PaddedBatch(maxBatch));

    /// <summary>Derives the shape from the model, the limits and the kernels' tuning.</summary>
    public static WorkspaceShape For(LlamaConfig config, int maxBatch, int maxSeq, KernelTuning tuning, int? prefillTokens = null, KvCacheType kvCache = KvCacheType.Fp16)
    {
        if (maxBatch < 1 || maxBatch > MaxSequences)
            throw new EngineArgumentException($"{EngineParameters.MaxBatchSize} {maxBatch} must be between 1 and {MaxSequences}", EngineParameter.MaxBatchSize);
        if (maxSeq < 1 || maxSeq > config.MaxPositionEmbeddings)
            throw new EngineArgumentException(
                $"{EngineParameters.MaxSeqLen} {maxSeq} must be between 1 and the model's max_position_embeddings {config.MaxPositionEmbeddings}", EngineParameter.MaxSeqLen);
        // The kernels address one layer's K or V cache with 32-bit offsets (KvCacheLayout.Offset,
        // in 16-bit words for the stores): slots x kv_heads x max_seq x head_dim x words per value
        // must stay below 2^31, or the offsets wrap and one sequence writes over another's keys
        // (64 slots x 131072 positions x 8 x 128 fp16 values would).
        var layout = new KvCacheLayout(config.NumKeyValueHeads, maxSeq, config.HeadDim, kvCache);
        long layerWords = layout.WordsFor(maxBatch);
        if (layerWords > int.MaxValue)
            throw new EngineArgumentException(
                $"{EngineParameters.MaxBatchSize} {maxBatch} x {EngineParameters.MaxSeqLen} {maxSeq} gives one layer's KV cache {layout.Elements(maxBatch):N0} values " +
                $"({maxBatch} x {maxSeq} x {config.NumKeyValueHeads} kv heads x {config.HeadDim}), beyond the {int.MaxValue / layout.Words:N0} {kvCache.Name()} values the kernels' 32-bit offsets address; " +
                $"lower {EngineParameters.MaxBatchSize} or {EngineParameters.MaxSeqLen} (at most {int.MaxValue / ((long)maxBatch * config.NumKeyValueHeads * config.HeadDim * layout.Words):N0} positions at this batch)",
                EngineParameter.MaxSeqLen);
        int t = prefillTokens ?? DefaultPrefillTokens(maxBatch, maxSeq);
        if (t < 1)
            throw new EngineArgumentException($"{EngineParameters.PrefillChunk} {t} must be at least 1", EngineParameter.PrefillChunk);
        int padded = MatVecKernels.PaddedBatch(maxBatch);
        if (t < padded)
            throw new EngineArgumentException(
                $"{EngineParameters.PrefillChunk} {t} is below {padded} for {EngineParameters.MaxBatchSize} {maxBatch}: a decode step uses the prefill activations, one row per sequence in whole tiles of {BatchWidth.Max}; raise {EngineParameters.PrefillChunk} to at least {padded}",
                EngineParameter.PrefillChunk);
        int vocab = config.VocabSize;
        int topKCapacity = Math.Min(Math.Min(MaxSamplingCandidates, LogitsKernels.TopKMax(vocab, tuning)), vocab);
        return new WorkspaceShape(maxBatch, maxSeq, t, AttentionKernels.Splits(maxSeq, tuning),
            LogitsKernels.ReduceParts(vocab, tuning), LogitsKernels.TopKParts(vocab, tuning), topKCapacity) { KvCache = kvCache };
    }
}

/// <summary>One device buffer of the workspace: name, category, element type and shape.</summary>
/// <param name="Name">allocator name (act.*, kv_cache.{k,v}.layerN)</param>
/// <param name="Category">memory category it is counted in</param>
/// <param name="Item">line of the memory report it belongs to</param>
/// <param name="DimsText">the shape as a formula of T, B, seq and model dimensions, e.g. "T x hidden"</param>
/// <param name="Shape">the shape's values</param>
public abstract record BufferSpec(string Name, MemoryCategory Category, string Item, string DimsText, long[] Shape)
{
    /// <summary>Bytes per element.</summary>
    public abstract int ElementBytes { get; }

    /// <summary>Elements: the product of <see cref="Shape"/>.</summary>
    public long Elements => Shape.Aggregate(1L, (a, d) => checked(a * d));

    /// <summary>Bytes: elements x element size.</summary>
    public long Bytes => checked(Elements * ElementBytes);

    /// <summary>The size formula: dims x element bytes.</summary>
    public string Formula => $"{DimsText} x {ElementBytes}";

    /// <summary>Allocates the buffer through <paramref name="allocator"/>.</summary>
    public abstract IDisposable Allocate(DeviceAllocator allocator);
}

/// <summary>A buffer of <typeparamref name="T"/> elements.</summary>
public sealed record BufferSpec<T>(string Name, MemoryCategory Category, string Item, string DimsText, long[] Shape)
    : BufferSpec(Name, Category, Item, DimsText, Shape)
    where T : unmanaged
{
    /// <inheritdoc/>
    public override int ElementBytes => Marshal.SizeOf<T>();

    /// <inheritdoc/>
    public override IDisposable Allocate(DeviceAllocator allocator) => allocator.Allocate<T>(Name, Category, Shape);
}

/// <summary>
/// Every buffer of the forward pass, listed once (llm.c's TensorSpec table): the activation
/// workspace (fp32, decode uses the first B rows of the prefill-sized buffers) and the KV cache.
/// <see cref="MemoryPlan"/> sums this list and the engine's Workspace allocates it, so the
/// allocator's totals equal the memory formula by construction.
/// </summary>
public sealed class WorkspacePlan
{
    readonly List<BufferSpec> buffers = [];

    // Report lines (items) the buffers are grouped into.
    const string Residual = "residual x, normed xb";
    const string QAndOut = "q, attention output";
    const string KAndV = "k, v";
    const string GateUp = "gate, up";
    const string LogitsItem = "logits";
    const string LastHiddenItem = "last-token hidden";
    const string RopeItem = "rope table";
    const string Splits = "attention split partials";
    const string Bookkeeping = "token bookkeeping";
    const string Sampling = "sampling (reduce, top-k, penalty flags)";

    /// <summary>Lists the buffers of <paramref name="config"/> at <paramref name="shape"/>.</summary>
    public WorkspacePlan(LlamaConfig config, WorkspaceShape shape)
    {
        Shape = shape;
        long t = shape.PrefillTokens, b = shape.MaxBatch, s = shape.MaxSeq;
        long h = config.HiddenSize, q = config.QDim, kv = config.KvDim, inter = config.IntermediateSize, vocab = config.VocabSize;
        long heads = config.NumAttentionHeads, kvHeads = config.NumKeyValueHeads, hd = config.HeadDim, splits = shape.AttentionSplits;
        long parts = shape.LogitsParts, partsK = shape.TopKParts, c = shape.TopKCapacity;

        // The forward pass keeps the residual stream and every intermediate of one layer for T tokens.
        X = Act<float>("act.x", Residual, "T x hidden", t, h);
        Xb = Act<float>("act.xb", Residual, "T x hidden", t, h);
        Q = Act<float>("act.q", QAndOut, "T x heads x head_dim", t, q);
        AttentionOut = Act<float>("act.attn_out", QAndOut, "T x heads x head_dim", t, q);
        K = Act<float>("act.k", KAndV, "T x kv_heads x head_dim", t, kv);
        V = Act<float>("act.v", KAndV, "T x kv_heads x head_dim", t, kv);
        Gate = Act<float>("act.gate", GateUp, "T x intermediate", t, inter);
        Up = Act<float>("act.up", GateUp, "T x intermediate", t, inter);
        // Logits are only ever computed for at most B rows (last prompt token / one decode step).
        Logits = Act<float>("act.logits", LogitsItem, "B x vocab", b, vocab);
        LastHidden = Act<float>("act.last_hidden", LastHiddenItem, "B x hidden", b, h);
        RopeTable = Act<float>("act.rope_table", RopeItem, "seq x head_dim/2 x 2", s, hd / 2, 2);
        AttentionPartialAcc = Act<float>("act.attn_partial_acc", Splits, "B x heads x splits x head_dim", b, heads, splits, hd);
        AttentionPartialMl = Act<float>("act.attn_partial_ml", Splits, "B x heads x splits x 2", b, heads, splits, 2);
        AttentionCounters = Act<int>("act.attn_counters", Splits, "B x kv_heads", b, kvHeads);
        PersistentSync = Act<int>("act.layer_sync", Bookkeeping, "8", Kernels.DecodeLayerKernels.SyncInts);
        PrefillTokens = Act<int>("act.prefill_tokens", Bookkeeping, "T", t);
        PrefillPositions = Act<int>("act.prefill_positions", Bookkeeping, "T", t);
        PrefillSlots = Act<int>("act.prefill_slots", Bookkeeping, "T", t);
        LastRows = Act<int>("act.last_rows", Bookkeeping, "B", b);
        StepTokens = Act<int>("act.step_tokens", Bookkeeping, "B", b);
        StepPositions = Act<int>("act.step_positions", Bookkeeping, "B", b);
        StepSlots = Act<int>("act.step_slots", Bookkeeping, "B", b);
        ReducePartialMax = Act<float>("act.reduce_partial_max", Sampling, "B x parts", b, parts);
        ReducePartialSum = Act<float>("act.reduce_partial_sum", Sampling, "B x parts", b, parts);
        ReducePartialIdx = Act<int>("act.reduce_partial_idx", Sampling, "B x parts", b, parts);
        ReduceCounters = Act<int>("act.reduce_counters", Sampling, "B", b);
        Argmax = Act<int>("act.argmax", Sampling, "B", b);
        MaxLogit = Act<float>("act.max_logit", Sampling, "B", b);
        SumExp = Act<float>("act.sum_exp", Sampling, "B", b);
        SelectInvTemperature = Act<float>("act.select_inv_temperature", Sampling, "B", b);
        SelectPenalty = Act<float>("act.select_penalty", Sampling, "B", b);
        TopKPartialVal = Act<float>("act.topk_partial_val", Sampling, "B x parts_k x C", b, partsK, c);
        TopKPartialIdx = Act<int>("act.topk_partial_idx", Sampling, "B x parts_k x C", b, partsK, c);
        TopKCounters = Act<int>("act.topk_counters", Sampling, "B", b);
        TopKVal = Act<float>("act.topk_val", Sampling, "B x C", b, c);
        TopKIdx = Act<int>("act.topk_idx", Sampling, "B x C", b, c);
        Seen = Act<byte>("act.seen", Sampling, "B x vocab", b, vocab);

        KCache = new BufferSpec<ushort>[config.NumHiddenLayers];
        VCache = new BufferSpec<ushort>[config.NumHiddenLayers];
        // 16-bit words: one per fp16 value, two per fp32 value (KvCacheLayout).
        int words = shape.KvCache.Bytes() / 2;
        string dims = words == 1 ? "B x kv_heads x seq x head_dim" : $"B x kv_heads x seq x head_dim x {words}";
        long[] cacheShape = words == 1 ? [b, kvHeads, s, hd] : [b, kvHeads, s, hd, words];
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            KCache[l] = Add<ushort>($"kv_cache.k.layer{l}", MemoryCategory.KvCache, "KV cache", dims, cacheShape);
            VCache[l] = Add<ushort>($"kv_cache.v.layer{l}", MemoryCategory.KvCache, "KV cache", dims, cacheShape);
        }
        // The kernels index the cache with 32-bit offsets.
        if (KCache.Length > 0 && KCache[0].Elements > int.MaxValue)
            throw new EngineArgumentException(
                $"a KV cache layer of {b} x {kvHeads} x {s} x {hd} values exceeds the kernels' 32-bit indexing; lower {EngineParameters.MaxBatchSize} or {EngineParameters.MaxSeqLen}",
                EngineParameter.MaxSeqLen);
    }

    BufferSpec<T> Add<T>(string name, MemoryCategory category, string item, string dims, params long[] shape)
        where T : unmanaged
    {
        var spec = new BufferSpec<T>(name, category, item, dims, shape);
        buffers.Add(spec);
        return spec;
    }

    BufferSpec<T> Act<T>(string name, string item, string dims, params long[] shape)
        where T : unmanaged => Add<T>(name, MemoryCategory.Activations, item, dims, shape);

    /// <summary>The sizes this plan was built for.</summary>
    public WorkspaceShape Shape { get; }

    /// <summary>Every buffer, in allocation order.</summary>
    public IReadOnlyList<BufferSpec> Buffers => buffers;

    /// <summary>Residual stream [T, hidden].</summary>
    public BufferSpec<float> X { get; }
    /// <summary>Normed residual [T, hidden].</summary>
    public BufferSpec<float> Xb { get; }
    /// <summary>Queries [T, heads x head_dim].</summary>
    public BufferSpec<float> Q { get; }
    /// <summary>Attention output [T, heads x head_dim].</summary>
    public BufferSpec<float> AttentionOut { get; }
    /// <summary>Keys before the cache [T, kv_dim] (prefill).</summary>
    public BufferSpec<float> K { get; }
    /// <summary>Values before the cache [T, kv_dim] (prefill).</summary>
    public BufferSpec<float> V { get; }
    /// <summary>MLP gate, then silu(gate) x up [T, intermediate].</summary>
    public BufferSpec<float> Gate { get; }
    /// <summary>MLP up [T, intermediate] (prefill).</summary>
    public BufferSpec<float> Up { get; }
    /// <summary>Logits of at most B rows [B, vocab].</summary>
    public BufferSpec<float> Logits { get; }
    /// <summary>Residual of each sequence's last prompt token [B, hidden].</summary>
    public BufferSpec<float> LastHidden { get; }
    /// <summary>cos/sin table [max_seq, head_dim/2, 2].</summary>
    public BufferSpec<float> RopeTable { get; }
    /// <summary>Decode attention split accumulators [B, heads, splits, head_dim].</summary>
    public BufferSpec<float> AttentionPartialAcc { get; }
    /// <summary>Decode attention split (max, sum) [B, heads, splits, 2].</summary>
    public BufferSpec<float> AttentionPartialMl { get; }
    /// <summary>Decode attention completion counters [B, kv_heads].</summary>
    public BufferSpec<int> AttentionCounters { get; }

    /// <summary>The persistent decode layer's task counters (ticket, leavers, one per stage), zero between launches.</summary>
    public BufferSpec<int> PersistentSync { get; }
    /// <summary>Prefill input tokens [T].</summary>
    public BufferSpec<int> PrefillTokens { get; }
    /// <summary>Prefill positions [T].</summary>
    public BufferSpec<int> PrefillPositions { get; }
    /// <summary>Prefill cache slots [T].</summary>
    public BufferSpec<int> PrefillSlots { get; }
    /// <summary>Row of each sequence's last token within a prefill chunk [B].</summary>
    public BufferSpec<int> LastRows { get; }
    /// <summary>Decode input tokens [B] (greedy decoding writes the next ones here on the device).</summary>
    public BufferSpec<int> StepTokens { get; }
    /// <summary>Decode positions [B], advanced on the device after each step.</summary>
    public BufferSpec<int> StepPositions { get; }
    /// <summary>Cache slot of each decode row [B].</summary>
    public BufferSpec<int> StepSlots { get; }
    /// <summary>Logits reduction partial maxima [B, parts].</summary>
    public BufferSpec<float> ReducePartialMax { get; }
    /// <summary>Logits reduction partial normalisers [B, parts].</summary>
    public BufferSpec<float> ReducePartialSum { get; }
    /// <summary>Logits reduction partial argmaxes [B, parts].</summary>
    public BufferSpec<int> ReducePartialIdx { get; }
    /// <summary>Logits reduction counters [B].</summary>
    public BufferSpec<int> ReduceCounters { get; }
    /// <summary>Argmax of a sampling step [B] (-1 marks a NaN row).</summary>
    public BufferSpec<int> Argmax { get; }
    /// <summary>Max logit per row [B].</summary>
    public BufferSpec<float> MaxLogit { get; }
    /// <summary>Softmax normaliser per row [B].</summary>
    public BufferSpec<float> SumExp { get; }
    /// <summary>1 / temperature of each selection row [B] (data, so recorded steps serve every temperature).</summary>
    public BufferSpec<float> SelectInvTemperature { get; }
    /// <summary>Repetition penalty of each selection row [B] (1 = off).</summary>
    public BufferSpec<float> SelectPenalty { get; }
    /// <summary>Top-k partial values [B, parts_k, C].</summary>
    public BufferSpec<float> TopKPartialVal { get; }
    /// <summary>Top-k partial ids [B, parts_k, C].</summary>
    public BufferSpec<int> TopKPartialIdx { get; }
    /// <summary>Top-k counters [B].</summary>
    public BufferSpec<int> TopKCounters { get; }
    /// <summary>Sampling candidates' logits [B, C].</summary>
    public BufferSpec<float> TopKVal { get; }
    /// <summary>Sampling candidates' ids [B, C].</summary>
    public BufferSpec<int> TopKIdx { get; }
    /// <summary>Repetition-penalty flags [slots, vocab].</summary>
    public BufferSpec<byte> Seen { get; }
    /// <summary>K cache per layer [slots, kv_heads, max_seq, head_dim] in 16-bit words, fp16 or fp32 (<see cref="KvCacheLayout"/>).</summary>
    public BufferSpec<ushort>[] KCache { get; }
    /// <summary>V cache per layer, same layout.</summary>
    public BufferSpec<ushort>[] VCache { get; }
}
