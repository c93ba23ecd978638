namespace IlgpuLlama.Kernels;

/// <summary>
/// Every kernel of the model, loaded once for one accelerator and one weight storage type, with
/// host-side launch code: it checks shapes and view lengths (a clear ArgumentException instead
/// of an out-of-bounds access on the device), computes the launch configuration from
/// <see cref="KernelTuning"/>, and enqueues on <see cref="Stream"/>. Nothing here allocates
/// device memory: workspaces are passed in, so the engine's tracking allocator sees every byte.
/// </summary>
public sealed class LlamaKernels
{
    readonly Action<AcceleratorStream, Index1D, ArrayView<ushort>, ArrayView<int>, ArrayView<float>, int> embedding;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, int, float> rmsNorm;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int> rope;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<int>, ArrayView<int>, int, int, int> kvAppend;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>> swiGlu;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int> gatherRows;
    readonly Action<AcceleratorStream, Index1D, ArrayView<int>, ArrayView<int>, ArrayView<byte>, int> markSeen;
    readonly Action<AcceleratorStream, Index1D, ArrayView<int>, int> addScalar;
    // Decode matmuls are specialised per batch width and compiled on first use of that width.
    readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape>>[] matVec;
    readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape>>[] matVecSwiGlu;
    readonly Lazy<Action<AcceleratorStream, KernelConfig, QkvRopeArgs>>[] matVecQkvRope;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, ArrayView<U4>, ArrayView<float>, GemmShape> gemm;
    readonly Action<AcceleratorStream, KernelConfig, AttentionArgs> attention;
    readonly Action<AcceleratorStream, KernelConfig, LogitsReduceArgs> logitsReduce;
    readonly Action<AcceleratorStream, KernelConfig, TopKArgs> topK;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<byte>, int, float> repetitionPenalty;

    /// <summary>Loads (compiles) every kernel for <paramref name="accelerator"/>.</summary>
    public LlamaKernels(Accelerator accelerator, WeightStorage storage, KernelTuning? tuning = null)
    {
        Accelerator = accelerator;
        Storage = storage;
        Tuning = (tuning ?? KernelTuning.For(accelerator)).ClampTo(accelerator);
        Stream = accelerator.DefaultStream;

        var a = accelerator;
        (embedding, rmsNorm, gemm, matVec, matVecSwiGlu, matVecQkvRope) = storage == WeightStorage.Fp16
            ? LoadWeightKernels<Fp16Format>(a)
            : LoadWeightKernels<Bf16Format>(a);
        rope = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int>(RopeKernels.Rope);
        kvAppend = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<int>, ArrayView<int>, int, int, int>(KvCacheKernels.KvAppend);
        swiGlu = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>>(ElementwiseKernels.SwiGlu);
        gatherRows = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>(ElementwiseKernels.GatherRows);
        markSeen = a.LoadAutoGroupedKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<byte>, int>(ElementwiseKernels.MarkSeen);
        addScalar = a.LoadAutoGroupedKernel<Index1D, ArrayView<int>, int>(ElementwiseKernels.AddScalar);
        attention = a.LoadKernel<AttentionArgs>(AttentionKernels.Attention);
        logitsReduce = a.LoadKernel<LogitsReduceArgs>(LogitsKernels.Reduce);
        topK = a.LoadKernel<TopKArgs>(LogitsKernels.TopK);
        repetitionPenalty = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<byte>, int, float>(LogitsKernels.RepetitionPenalty);
    }

    static Lazy<T> Lazy<T>(Func<T> load) => new(load, LazyThreadSafetyMode.ExecutionAndPublication);

    // The kernels that read 16-bit weights, specialised for one storage type.
    static (Action<AcceleratorStream, Index1D, ArrayView<ushort>, ArrayView<int>, ArrayView<float>, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, int, float>,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, ArrayView<U4>, ArrayView<float>, GemmShape>,
        Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape>>[],
        Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape>>[],
        Lazy<Action<AcceleratorStream, KernelConfig, QkvRopeArgs>>[]) LoadWeightKernels<TW>(Accelerator a)
        where TW : struct, IWeightFormat =>
        (a.LoadAutoGroupedKernel<Index1D, ArrayView<ushort>, ArrayView<int>, ArrayView<float>, int>(EmbeddingKernels.Embedding<TW>),
         a.LoadKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, int, float>(RmsNormKernels.RmsNorm<TW>),
         a.LoadKernel<ArrayView<F4>, ArrayView<U4>, ArrayView<float>, GemmShape>(GemmKernels.Gemm<TW>),
         [Lazy(() => MatVecFor<TW, Batch1>(a)), Lazy(() => MatVecFor<TW, Batch2>(a)), Lazy(() => MatVecFor<TW, Batch3>(a)), Lazy(() => MatVecFor<TW, Batch4>(a))],
         [Lazy(() => SwiGluFor<TW, Batch1>(a)), Lazy(() => SwiGluFor<TW, Batch2>(a)), Lazy(() => SwiGluFor<TW, Batch3>(a)), Lazy(() => SwiGluFor<TW, Batch4>(a))],
         [Lazy(() => QkvFor<TW, Batch1>(a)), Lazy(() => QkvFor<TW, Batch2>(a)), Lazy(() => QkvFor<TW, Batch3>(a)), Lazy(() => QkvFor<TW, Batch4>(a))]);

    static Action<AcceleratorStream, KernelConfig, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape> MatVecFor<TW, TB>(Accelerator a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth =>
        a.LoadKernel<ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape>(MatVecKernels.MatVec<TW, TB>);

    static Action<AcceleratorStream, KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape> SwiGluFor<TW, TB>(Accelerator a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth =>
        a.LoadKernel<ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatVecShape>(MatVecKernels.MatVecSwiGlu<TW, TB>);

    static Action<AcceleratorStream, KernelConfig, QkvRopeArgs> QkvFor<TW, TB>(Accelerator a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth =>
        a.LoadKernel<QkvRopeArgs>(MatVecKernels.MatVecQkvRope<TW, TB>);

    /// <summary>The accelerator the kernels were compiled for.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>Weight storage type the weight-reading kernels were specialised for.</summary>
    public WeightStorage Storage { get; }

    /// <summary>Launch shapes in use.</summary>
    public KernelTuning Tuning { get; }

    /// <summary>Stream every launch is enqueued on (a CUDA graph captures this stream).</summary>
    public AcceleratorStream Stream { get; set; }

    /// <summary>
    /// When set, launches are not enqueued but appended here as closures with their arguments
    /// frozen, exactly what a CUDA graph capture records. Replaying the list re-runs the same
    /// launches: the CPU stand-in for graph replay, used to test that a decode step reads all
    /// per-step state from device memory.
    /// </summary>
    public List<Action>? Recording { get; set; }

    /// <summary>Runs <paramref name="enqueue"/> with launches recorded instead of enqueued, and returns them.</summary>
    public List<Action> RecordLaunches(Action enqueue)
    {
        var launches = new List<Action>();
        Recording = launches;
        try
        {
            enqueue();
        }
        finally
        {
            Recording = null;
        }
        return launches;
    }

    void Launch(Action launch)
    {
        if (Recording is { } r)
            r.Add(launch);
        else
            launch();
    }

    static void Require(bool condition, string message)
    {
        if (!condition)
            throw new ArgumentException(message);
    }

    static void RequireLength<T>(ArrayView<T> view, long needed, string name)
        where T : unmanaged
    {
        if (view.Length < needed)
            throw new ArgumentException($"{name}: view has {view.Length} elements but the launch needs {needed}");
    }

    static void RequireMultipleOf8(int inDim, string what) =>
        Require(inDim > 0 && inDim % 8 == 0, $"{what}: input length {inDim} must be a positive multiple of 8 (weights are read 8 at a time with 128-bit loads)");

    static void RequireBatch(int batch) =>
        Require(batch >= 1 && batch <= MatVecKernels.MaxBatch, $"batch {batch} must be between 1 and {MatVecKernels.MaxBatch} for the decode kernels");

    int MatVecGroup(int k8)
    {
        // Enough threads that each handles four chunks per row (one unrolled iteration), capped by the tuning.
        int warp = Accelerator.WarpSize;
        int want = Math.Max(warp, (k8 / 4 + warp - 1) / warp * warp);
        return Math.Min(want, Tuning.MatVecMaxGroup);
    }

    /// <summary>x[t, :] = table[tokens[t], :] for <paramref name="count"/> tokens.</summary>
    public void Embedding(ArrayView<ushort> table, ArrayView<int> tokens, ArrayView<float> x, int count, int hidden)
    {
        RequireLength(tokens, count, "embedding tokens");
        RequireLength(x, (long)count * hidden, "embedding output");
        var stream = Stream;
        Launch(() => embedding(stream, count * hidden, table, tokens, x, hidden));
    }

    /// <summary>y = rmsnorm(x) * weight over <paramref name="rows"/> rows of <paramref name="n"/>.</summary>
    public void RmsNorm(ArrayView<float> x, ArrayView<ushort> weight, ArrayView<float> y, int rows, int n, float eps)
    {
        RequireLength(x, (long)rows * n, "rmsnorm input");
        RequireLength(y, (long)rows * n, "rmsnorm output");
        RequireLength(weight, n, "rmsnorm weight");
        var stream = Stream;
        Launch(() => rmsNorm(stream, new KernelConfig(rows, Tuning.RmsNormGroup), x, weight, y, n, eps));
    }

    /// <summary>In-place rotate_half RoPE of q and k for <paramref name="tokens"/> tokens.</summary>
    public void Rope(ArrayView<float> q, ArrayView<float> k, ArrayView<int> positions, ArrayView<float> ropeTable, int tokens, int heads, int kvHeads, int headDim)
    {
        Require(headDim % 2 == 0, $"rope: head_dim {headDim} must be even");
        RequireLength(q, (long)tokens * heads * headDim, "rope q");
        RequireLength(k, (long)tokens * kvHeads * headDim, "rope k");
        RequireLength(positions, tokens, "rope positions");
        var stream = Stream;
        Launch(() => rope(stream, tokens * (heads + kvHeads) * (headDim / 2), q, k, positions, ropeTable, heads, kvHeads, headDim));
    }

    /// <summary>Writes k and v of <paramref name="tokens"/> tokens into the fp16 cache.</summary>
    public void KvAppend(ArrayView<float> k, ArrayView<float> v, ArrayView<ushort> kCache, ArrayView<ushort> vCache, ArrayView<int> slots, ArrayView<int> positions,
        int tokens, int kvHeads, int headDim, int maxSeq)
    {
        RequireLength(k, (long)tokens * kvHeads * headDim, "kv append k");
        RequireLength(v, (long)tokens * kvHeads * headDim, "kv append v");
        RequireLength(slots, tokens, "kv append slots");
        RequireLength(positions, tokens, "kv append positions");
        var stream = Stream;
        Launch(() => kvAppend(stream, tokens * kvHeads * headDim, k, v, kCache, vCache, slots, positions, kvHeads, headDim, maxSeq));
    }

    /// <summary>gate = silu(gate) * up over <paramref name="count"/> elements.</summary>
    public void SwiGlu(ArrayView<float> gate, ArrayView<float> up, int count)
    {
        RequireLength(gate, count, "swiglu gate");
        RequireLength(up, count, "swiglu up");
        var stream = Stream;
        Launch(() => swiGlu(stream, count, gate, up));
    }

    /// <summary>dst[i, :] = src[rows[i], :].</summary>
    public void GatherRows(ArrayView<float> src, ArrayView<int> rows, ArrayView<float> dst, int count, int width)
    {
        RequireLength(rows, count, "gather rows");
        RequireLength(dst, (long)count * width, "gather output");
        var stream = Stream;
        Launch(() => gatherRows(stream, count * width, src, rows, dst, width));
    }

    /// <summary>seen[slots[i], tokens[i]] = 1.</summary>
    public void MarkSeen(ArrayView<int> tokens, ArrayView<int> slots, ArrayView<byte> seen, int count, int vocab)
    {
        RequireLength(tokens, count, "mark-seen tokens");
        RequireLength(slots, count, "mark-seen slots");
        var stream = Stream;
        Launch(() => markSeen(stream, count, tokens, slots, seen, vocab));
    }

    /// <summary>values[i] += delta for i &lt; count (advances decode positions without a host round trip).</summary>
    public void AddScalar(ArrayView<int> values, int count, int delta)
    {
        RequireLength(values, count, "add-scalar values");
        var stream = Stream;
        Launch(() => addScalar(stream, count, values, delta));
    }

    /// <summary>y[b, :] (+)= W x[b] for <paramref name="batch"/> (1..4) vectors.</summary>
    public void MatVec(ArrayView<ushort> w, ArrayView<float> x, ArrayView<float> y, int rows, int inDim, int batch, bool accumulate, int yStride = -1)
    {
        RequireMultipleOf8(inDim, "matvec");
        RequireBatch(batch);
        if (yStride < 0)
            yStride = rows;
        RequireLength(w, (long)rows * inDim, "matvec weight");
        RequireLength(x, (long)batch * inDim, "matvec x");
        RequireLength(y, (long)(batch - 1) * yStride + rows, "matvec y");
        var shape = new MatVecShape { Rows = rows, K8 = inDim / 8, YStride = yStride, Accumulate = accumulate ? 1 : 0 };
        int groups = (rows + MatVecKernels.RowsPerGroup - 1) / MatVecKernels.RowsPerGroup;
        var stream = Stream;
        var kernel = matVec[batch - 1].Value;
        Launch(() => kernel(stream, new KernelConfig(groups, MatVecGroup(shape.K8)), U4View(w), F4View(x), y, shape));
    }

    /// <summary>h[b, :] = silu(Wg x[b]) * (Wu x[b]).</summary>
    public void MatVecSwiGlu(ArrayView<ushort> wGate, ArrayView<ushort> wUp, ArrayView<float> x, ArrayView<float> h, int rows, int inDim, int batch)
    {
        RequireMultipleOf8(inDim, "matvec-swiglu");
        RequireBatch(batch);
        RequireLength(wGate, (long)rows * inDim, "swiglu gate weight");
        RequireLength(wUp, (long)rows * inDim, "swiglu up weight");
        RequireLength(x, (long)batch * inDim, "swiglu x");
        RequireLength(h, (long)batch * rows, "swiglu output");
        var shape = new MatVecShape { Rows = rows, K8 = inDim / 8, YStride = rows };
        var stream = Stream;
        var kernel = matVecSwiGlu[batch - 1].Value;
        Launch(() => kernel(stream, new KernelConfig(rows, MatVecGroup(shape.K8)), U4View(wGate), U4View(wUp), F4View(x), h, shape));
    }

    /// <summary>Fused decode q/k/v projection + RoPE + KV append (see MatVecKernels).</summary>
    public void MatVecQkvRope(ArrayView<ushort> wq, ArrayView<ushort> wk, ArrayView<ushort> wv, ArrayView<float> x, ArrayView<float> q,
        ArrayView<ushort> kCache, ArrayView<ushort> vCache, ArrayView<float> ropeTable, ArrayView<int> slots, ArrayView<int> positions,
        int hidden, int batch, int heads, int kvHeads, int headDim, int maxSeq)
    {
        RequireMultipleOf8(hidden, "matvec-qkv");
        RequireBatch(batch);
        Require(headDim % 2 == 0, $"head_dim {headDim} must be even");
        int qDim = heads * headDim;
        int kvDim = kvHeads * headDim;
        RequireLength(wq, (long)qDim * hidden, "q_proj weight");
        RequireLength(wk, (long)kvDim * hidden, "k_proj weight");
        RequireLength(wv, (long)kvDim * hidden, "v_proj weight");
        RequireLength(x, (long)batch * hidden, "qkv x");
        RequireLength(q, (long)batch * qDim, "qkv q output");
        RequireLength(slots, batch, "qkv slots");
        RequireLength(positions, batch, "qkv positions");
        RequireLength(ropeTable, (long)maxSeq * headDim, "rope table");
        var args = new QkvRopeArgs
        {
            Wq = U4View(wq), Wk = U4View(wk), Wv = U4View(wv), X = F4View(x), Q = q,
            KCache = kCache, VCache = vCache, Rope = ropeTable, Slots = slots, Positions = positions,
            K8 = hidden / 8, QDim = qDim, KvDim = kvDim, HeadDim = headDim, KvHeads = kvHeads, MaxSeq = maxSeq,
        };
        var stream = Stream;
        var kernel = matVecQkvRope[batch - 1].Value;
        Launch(() => kernel(stream, new KernelConfig((qDim + 2 * kvDim) / 2, MatVecGroup(args.K8)), args));
    }

    /// <summary>C[m, :] (+)= X[m, :] W^T for prompt processing.</summary>
    public void Gemm(ArrayView<float> x, ArrayView<ushort> w, ArrayView<float> c, int m, int n, int k, bool accumulate)
    {
        RequireMultipleOf8(k, "gemm");
        RequireLength(x, (long)m * k, "gemm x");
        RequireLength(w, (long)n * k, "gemm weight");
        RequireLength(c, (long)m * n, "gemm output");
        int td = Tuning.GemmTDim;
        int tile = 4 * td;
        int groups = ((m + tile - 1) / tile) * ((n + tile - 1) / tile);
        var shape = new GemmShape { M = m, N = n, K = k, TDim = td, Accumulate = accumulate ? 1 : 0 };
        var stream = Stream;
        Launch(() => gemm(stream, new KernelConfig(groups, td * td), F4View(x), U4View(w), c, shape));
    }

    /// <summary>Number of key splits the attention workspace must hold for <paramref name="maxSeq"/>.</summary>
    public static int AttentionSplits(int maxSeq, int minChunk, int group) => Math.Clamp((maxSeq + minChunk - 1) / minChunk, 1, Math.Min(32, group));

    /// <summary>Compiles the decode kernels for batch widths 1..<paramref name="maxBatch"/> now, so no compilation happens while generating.</summary>
    public void Preload(int maxBatch)
    {
        for (int b = 0; b < Math.Min(maxBatch, MatVecKernels.MaxBatch); b++)
        {
            _ = matVec[b].Value;
            _ = matVecSwiGlu[b].Value;
            _ = matVecQkvRope[b].Value;
        }
    }

    /// <summary>
    /// GQA attention for <paramref name="rows"/> query rows over the cache (decode: rows = batch
    /// with <paramref name="splits"/> &gt; 1; prefill: rows = tokens, splits = 1).
    /// </summary>
    public void Attention(ArrayView<float> q, ArrayView<ushort> kCache, ArrayView<ushort> vCache, ArrayView<int> slots, ArrayView<int> positions,
        ArrayView<float> output, ArrayView<float> partialAcc, ArrayView<float> partialMl, ArrayView<int> counters,
        int rows, int heads, int kvHeads, int headDim, int maxSeq, int splits, float scale)
    {
        Require(heads % kvHeads == 0, $"attention: heads {heads} must be a multiple of kv_heads {kvHeads}");
        Require(headDim % 8 == 0, $"attention: head_dim {headDim} must be a multiple of 8");
        Require(splits >= 1, "attention: splits must be >= 1");
        Require(splits <= Tuning.AttentionGroup, $"attention: {splits} splits exceed the group size {Tuning.AttentionGroup} (the merge keeps one weight per split in the score slots)");
        RequireLength(q, (long)rows * heads * headDim, "attention q");
        RequireLength(output, (long)rows * heads * headDim, "attention output");
        RequireLength(slots, rows, "attention slots");
        RequireLength(positions, rows, "attention positions");
        if (splits > 1)
        {
            RequireLength(partialAcc, (long)rows * heads * splits * headDim, "attention partial accumulators");
            RequireLength(partialMl, (long)rows * heads * splits * 2, "attention partial max/sum");
            RequireLength(counters, (long)rows * kvHeads, "attention counters");
        }
        int group = Tuning.AttentionGroup;
        var args = new AttentionArgs
        {
            Q = q, KCache = kCache.Cast<U4>(), VCache = vCache.Cast<uint>(), Slots = slots, Positions = positions, Out = output,
            PartialAcc = partialAcc, PartialMl = partialMl, Counters = counters,
            Heads = heads, KvHeads = kvHeads, HeadDim = headDim, MaxSeq = maxSeq, Splits = splits,
            MinChunk = Tuning.AttentionMinChunk, Scale = scale,
        };
        var config = new KernelConfig(rows * kvHeads * splits, group,
            SharedMemoryConfig.RequestDynamic<float>(AttentionKernels.SharedFloats(heads, kvHeads, headDim, group)));
        var stream = Stream;
        Launch(() => attention(stream, config, args));
    }

    /// <summary>Groups per row the logits reduction uses (sizes its partial buffers).</summary>
    public int LogitsReduceParts(int vocab) => Math.Max(1, (vocab + Tuning.LogitsSlice - 1) / Tuning.LogitsSlice);

    /// <summary>Groups per row top-k uses (sizes its partial buffers).</summary>
    public int TopKParts(int vocab) => Math.Max(1, (vocab + Tuning.TopKSlice - 1) / Tuning.TopKSlice);

    /// <summary>Largest k top-k supports for <paramref name="vocab"/>.</summary>
    public int TopKMax(int vocab) => Tuning.TopKSlice / TopKParts(vocab);

    /// <summary>Per row: argmax token (-1 on NaN), max logit and sum of exp((l - max) / T).</summary>
    public void LogitsReduce(ArrayView<float> logits, ArrayView<float> partialMax, ArrayView<float> partialSum, ArrayView<int> partialIdx, ArrayView<int> counters,
        ArrayView<int> token, ArrayView<float> max, ArrayView<float> sumExp, int rows, int vocab, float temperature)
    {
        int parts = LogitsReduceParts(vocab);
        RequireLength(logits, (long)rows * vocab, "logits");
        RequireLength(partialMax, (long)rows * parts, "logits partial max");
        RequireLength(partialSum, (long)rows * parts, "logits partial sum");
        RequireLength(partialIdx, (long)rows * parts, "logits partial index");
        RequireLength(counters, rows, "logits counters");
        RequireLength(token, rows, "argmax output");
        var args = new LogitsReduceArgs
        {
            Logits = logits, PartialMax = partialMax, PartialSum = partialSum, PartialIdx = partialIdx, Counters = counters,
            Token = token, Max = max, SumExp = sumExp, Vocab = vocab, Parts = parts,
            InvTemperature = temperature > 0 ? 1f / temperature : 1f,
        };
        var stream = Stream;
        Launch(() => logitsReduce(stream, new KernelConfig(rows * parts, Tuning.LogitsGroup), args));
    }

    /// <summary>Top-<paramref name="k"/> logits and ids per row, sorted descending.</summary>
    public void TopK(ArrayView<float> logits, ArrayView<float> partialVal, ArrayView<int> partialIdx, ArrayView<int> counters,
        ArrayView<float> outVal, ArrayView<int> outIdx, int rows, int vocab, int k)
    {
        int parts = TopKParts(vocab);
        Require(k >= 1 && k <= TopKMax(vocab), $"top-k: k {k} must be between 1 and {TopKMax(vocab)} for a vocabulary of {vocab}");
        RequireLength(logits, (long)rows * vocab, "logits");
        RequireLength(partialVal, (long)rows * parts * k, "top-k partial values");
        RequireLength(partialIdx, (long)rows * parts * k, "top-k partial ids");
        RequireLength(counters, rows, "top-k counters");
        RequireLength(outVal, (long)rows * k, "top-k values");
        RequireLength(outIdx, (long)rows * k, "top-k ids");
        var args = new TopKArgs
        {
            Logits = logits, PartialVal = partialVal, PartialIdx = partialIdx, Counters = counters, OutVal = outVal, OutIdx = outIdx,
            Vocab = vocab, Parts = parts, K = k, SliceSize = Tuning.TopKSlice,
        };
        var stream = Stream;
        Launch(() => topK(stream, new KernelConfig(rows * parts, Tuning.LogitsGroup, SharedMemoryConfig.RequestDynamic<float>(2 * Tuning.TopKSlice)), args));
    }

    /// <summary>Applies the repetition penalty in place to every row's seen tokens.</summary>
    public void RepetitionPenalty(ArrayView<float> logits, ArrayView<int> slots, ArrayView<byte> seen, int rows, int vocab, float penalty)
    {
        Require(penalty > 0, $"repetition penalty {penalty} must be > 0");
        RequireLength(logits, (long)rows * vocab, "logits");
        RequireLength(slots, rows, "penalty slots");
        var stream = Stream;
        Launch(() => repetitionPenalty(stream, rows * vocab, logits, slots, seen, vocab, penalty));
    }

    static ArrayView<U4> U4View(ArrayView<ushort> w) => w.Cast<U4>();

    static ArrayView<F4> F4View(ArrayView<float> x) => x.Cast<F4>();
}
