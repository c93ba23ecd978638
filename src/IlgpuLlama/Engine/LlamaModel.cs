using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Engine;

/// <summary>Prompt tokens of one sequence to run through the model.</summary>
/// <param name="Slot">KV-cache slot (0..max batch - 1)</param>
/// <param name="StartPosition">position of the first token (0 starts a new sequence; more continues one, as chat does)</param>
/// <param name="Tokens">token ids</param>
public sealed record SequenceInput(int Slot, int StartPosition, IReadOnlyList<int> Tokens);

/// <summary>What the logits-selection kernels compute at the end of a step.</summary>
/// <param name="Greedy">argmax written straight into the next step's input tokens</param>
/// <param name="Temperature">softmax temperature for the normaliser (sampling)</param>
/// <param name="RepetitionPenalty">1 = off</param>
/// <param name="Candidates">top-k candidates returned per row when sampling</param>
public sealed record SelectMode(bool Greedy, float Temperature, float RepetitionPenalty, int Candidates)
{
    /// <summary>Plain argmax.</summary>
    public static SelectMode ArgMax { get; } = new(true, 1f, 1f, 0);
}

/// <summary>
/// Llama on an ILGPU accelerator: weights, preallocated KV cache and workspace, and the forward
/// pass as a readable list of kernel launches. Prefill runs whole prompts (GEMM + causal
/// attention); decode runs one token per sequence (GEMV + split attention). Nothing is allocated
/// on the device after construction.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    readonly Dictionary<(int Batch, SelectMode Mode), ILaunchGraph> graphs = new();
    readonly AcceleratorStream stream;
    readonly bool ownsStream;
    readonly float eps;
    readonly float attentionScale;

    LlamaModel(ComputeDevice device, LlamaConfig config, EngineOptions options)
    {
        Device = device;
        Config = config;
        Options = options;
        var accelerator = device.Accelerator;
        var tuning = (options.Tuning ?? KernelTuning.For(accelerator)).ClampTo(accelerator);
        Plan = new MemoryPlan(config, WorkspaceShape.For(config, options.MaxBatchSize, options.MaxSeqLen, tuning, options.PrefillChunk));
        CheckFits(accelerator, Plan);

        Allocator = new DeviceAllocator(accelerator, options.AllocationLog);
        try
        {
            Kernels = new LlamaKernels(accelerator, options.WeightType, tuning);
            Kernels.Preload(options.MaxBatchSize);
            // CUDA graphs cannot capture the legacy default stream, so the engine owns a stream.
            ownsStream = device.IsCuda;
            stream = ownsStream ? accelerator.CreateStream() : accelerator.DefaultStream;
            Kernels.Stream = stream;
            Weights = ModelWeights.Allocate(Allocator, config);
            Workspace = new Workspace(Allocator, config, Plan.Shape);
            var rope = RopeTable.Build(config.RopeInverseFrequencies(), Plan.Shape.MaxSeq);
            Workspace.RopeTable.View.CopyFromCPU(ref rope[0], rope.Length);
            accelerator.Synchronize();
        }
        catch
        {
            Workspace?.Dispose();
            Weights?.Dispose();
            Allocator.Dispose();
            throw;
        }
        eps = (float)config.RmsNormEps;
        attentionScale = 1f / MathF.Sqrt(config.HeadDim);
        UseGraphs = options.DecodeLaunch == DecodeLaunch.Graph || (options.DecodeLaunch == DecodeLaunch.Auto && device.IsCuda);
    }

    /// <summary>The device.</summary>
    public ComputeDevice Device { get; }

    /// <summary>Model hyper-parameters.</summary>
    public LlamaConfig Config { get; }

    /// <summary>Options the model was loaded with.</summary>
    public EngineOptions Options { get; }

    /// <summary>The memory formula for this model and these limits.</summary>
    public MemoryPlan Plan { get; }

    /// <summary>The tracking allocator every buffer came from.</summary>
    public DeviceAllocator Allocator { get; }

    /// <summary>The loaded kernels.</summary>
    public LlamaKernels Kernels { get; }

    /// <summary>Weights on the device.</summary>
    public ModelWeights Weights { get; }

    /// <summary>Activations and KV cache.</summary>
    public Workspace Workspace { get; }

    /// <summary>Whether decode steps are replayed from recorded graphs (turned off if a capture fails).</summary>
    public bool UseGraphs { get; private set; }

    /// <summary>Sequences decoded together.</summary>
    public int MaxBatch => Plan.Shape.MaxBatch;

    /// <summary>Positions per sequence.</summary>
    public int MaxSeq => Plan.Shape.MaxSeq;

    /// <summary>Warnings from loading (unused tensors, fp16 overflow), for the caller to print.</summary>
    public List<string> Warnings { get; } = [];

    /// <summary>Allocates a model with undefined weights (fill them with <see cref="ModelWeights"/> methods).</summary>
    public static LlamaModel Create(ComputeDevice device, LlamaConfig config, EngineOptions options) => new(device, config, options);

    /// <summary>Loads a Hugging Face model directory (config.json + safetensors, single or sharded).</summary>
    public static LlamaModel Load(ComputeDevice device, string modelDir, EngineOptions options, IProgress<UploadProgress>? progress = null)
    {
        if (!System.IO.Directory.Exists(modelDir))
            throw new DirectoryNotFoundException($"model directory '{modelDir}' does not exist; pass --model DIR with a Hugging Face Llama 3 download (see weights/README.md)");
        var config = LlamaConfig.FromDirectory(modelDir);
        using var source = SafetensorsModel.Open(modelDir);
        var warnings = LlamaConfig.ValidateWeights(config, source.Tensors, modelDir);
        var model = new LlamaModel(device, config, options);
        try
        {
            model.Warnings.AddRange(warnings);
            var stats = model.Weights.Upload(source, options.WeightType, device.Accelerator, progress);
            if (stats.Overflows > 0)
                model.Warnings.Add($"{stats.Overflows:N0} weights exceed the fp16 range and became +-inf; load with --dtype bf16 to keep them");
            if (stats.FlushedToZero > 0)
                model.Warnings.Add($"{stats.FlushedToZero:N0} tiny weights flushed to zero in fp16 (harmless in practice; --dtype bf16 keeps them)");
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    static void CheckFits(Accelerator accelerator, MemoryPlan plan)
    {
        long free = accelerator is ILGPU.Runtime.Cuda.CudaAccelerator cuda ? cuda.GetFreeMemory() : accelerator.MemorySize;
        if (plan.TotalBytes > free)
            throw new DeviceOutOfMemoryException(
                $"the model needs {DeviceAllocator.Gb(plan.TotalBytes)} (weights {DeviceAllocator.Gb(plan.WeightBytes)} + KV cache {DeviceAllocator.Gb(plan.KvCacheBytes)} + activations {DeviceAllocator.Gb(plan.ActivationBytes)}), " +
                $"the device has {DeviceAllocator.Gb(free)} free; lower --max-batch-size or --max-seq-len");
    }

    // ---- host <-> device helpers -------------------------------------------------------------

    void Upload<T>(DeviceBuffer<T> buffer, ReadOnlySpan<T> data, long offset = 0)
        where T : unmanaged
    {
        if (data.Length == 0)
            return;
        buffer.View.SubView(offset, data.Length).CopyFromCPU(stream, ref MemoryMarshal.GetReference(data), data.Length);
    }

    void Download<T>(DeviceBuffer<T> buffer, Span<T> data, long offset = 0)
        where T : unmanaged
    {
        buffer.View.SubView(offset, data.Length).CopyToCPU(stream, ref MemoryMarshal.GetReference(data), data.Length);
        stream.Synchronize();
    }

    /// <summary>Waits for all queued work.</summary>
    public void Synchronize() => stream.Synchronize();

    // ---- prefill ------------------------------------------------------------------------------

    /// <summary>
    /// Runs prompts through the model, writing their keys and values into their cache slots. When
    /// <paramref name="allLogits"/> is null, leaves the logits of each sequence's last token in
    /// rows 0..n-1 of the logits buffer (for <see cref="Select"/>); otherwise calls it with the
    /// logits of every token (row t predicts token t+1) and skips the last-token logits.
    /// Prompts longer than the prefill workspace are processed in chunks.
    /// </summary>
    public void Prefill(IReadOnlyList<SequenceInput> sequences, Action<int, int, ReadOnlySpan<float>>? allLogits = null)
    {
        ValidateInputs(sequences);
        int t = Plan.Shape.PrefillTokens;
        int h = Config.HiddenSize;
        var tokens = new int[t];
        var positions = new int[t];
        var slots = new int[t];
        var lastRows = new int[MaxBatch];

        foreach (var s in sequences.Where(s => s.StartPosition == 0))
            Workspace.Seen.View.SubView((long)s.Slot * Config.VocabSize, Config.VocabSize).MemSetToZero(stream);

        // Flatten the sequences into one token stream and walk it in chunks of T.
        var flat = sequences.SelectMany((s, i) => s.Tokens.Select((tok, j) => (Seq: i, s.Slot, Pos: s.StartPosition + j, Tok: tok, Last: j == s.Tokens.Count - 1))).ToList();
        for (int start = 0; start < flat.Count; start += t)
        {
            int n = Math.Min(t, flat.Count - start);
            var ending = new List<int>();
            for (int r = 0; r < n; r++)
            {
                var f = flat[start + r];
                tokens[r] = f.Tok;
                positions[r] = f.Pos;
                slots[r] = f.Slot;
                if (f.Last)
                {
                    lastRows[f.Seq] = r;
                    ending.Add(f.Seq);
                }
            }
            Upload(Workspace.PrefillTokens, tokens.AsSpan(0, n));
            Upload(Workspace.PrefillPositions, positions.AsSpan(0, n));
            Upload(Workspace.PrefillSlots, slots.AsSpan(0, n));
            Upload(Workspace.LastRows, lastRows.AsSpan());

            EnqueuePrefillLayers(n);

            if (allLogits is not null)
            {
                Kernels.RmsNorm(Workspace.X.View, Weights.FinalNorm.View, Workspace.Xb.View, n, h, eps);
                // The LM head runs over at most max-batch rows at a time (the logits buffer's height).
                var row = new float[MaxBatch * Config.VocabSize];
                for (int r = 0; r < n; r += MaxBatch)
                {
                    int rows = Math.Min(MaxBatch, n - r);
                    Kernels.MatVec(Weights.LmHead.View, Workspace.Xb.View.SubView((long)r * h), Workspace.Logits.View, Config.VocabSize, h, rows, false);
                    var span = row.AsSpan(0, rows * Config.VocabSize);
                    Download(Workspace.Logits, span);
                    for (int i = 0; i < rows; i++)
                        allLogits(flat[start + r + i].Seq, flat[start + r + i].Pos, span.Slice(i * Config.VocabSize, Config.VocabSize));
                }
            }
            else
            {
                foreach (int seq in ending)
                    Kernels.GatherRows(Workspace.X.View, Workspace.LastRows.View.SubView(seq, 1), Workspace.LastHidden.View.SubView((long)seq * h, h), 1, h);
            }
        }

        if (allLogits is null)
        {
            int count = sequences.Count;
            Kernels.RmsNorm(Workspace.LastHidden.View, Weights.FinalNorm.View, Workspace.Xb.View, count, h, eps);
            Kernels.MatVec(Weights.LmHead.View, Workspace.Xb.View, Workspace.Logits.View, Config.VocabSize, h, count, false);
        }
    }

    void ValidateInputs(IReadOnlyList<SequenceInput> sequences)
    {
        if (sequences.Count == 0 || sequences.Count > MaxBatch)
            throw new ArgumentException($"{sequences.Count} sequences given; between 1 and --max-batch-size {MaxBatch} can run together");
        var seenSlots = new HashSet<int>();
        foreach (var s in sequences)
        {
            if (s.Slot < 0 || s.Slot >= MaxBatch || !seenSlots.Add(s.Slot))
                throw new ArgumentException($"cache slot {s.Slot} is invalid or used twice (slots are 0..{MaxBatch - 1})");
            if (s.Tokens.Count == 0)
                throw new ArgumentException("a prompt has no tokens; give at least one token");
            if (s.StartPosition < 0 || s.StartPosition + s.Tokens.Count > MaxSeq)
                throw new ArgumentException($"a prompt of {s.Tokens.Count} tokens starting at position {s.StartPosition} exceeds --max-seq-len {MaxSeq}; shorten it or raise --max-seq-len");
            foreach (int tok in s.Tokens)
                if (tok < 0 || tok >= Config.VocabSize)
                    throw new ArgumentException($"token id {tok} is outside the vocabulary (0..{Config.VocabSize - 1})");
        }
    }

    /// <summary>The prefill forward pass over the first <paramref name="n"/> rows of the prefill inputs.</summary>
    void EnqueuePrefillLayers(int n)
    {
        var c = Config;
        var w = Workspace;
        int h = c.HiddenSize, q = c.QDim, kv = c.KvDim, inter = c.IntermediateSize;
        var k = Kernels;

        k.Embedding(Weights.Embedding.View, w.PrefillTokens.View, w.X.View, n, h);
        k.MarkSeen(w.PrefillTokens.View, w.PrefillSlots.View, w.Seen.View, n, c.VocabSize);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var lw = Weights.Layers[l];
            // attention block: x += o_proj(attention(rope(q), cache(rope(k), v)))
            k.RmsNorm(w.X.View, lw.InputNorm.View, w.Xb.View, n, h, eps);
            k.Gemm(w.Xb.View, lw.Q.View, w.Q.View, n, q, h, false);
            k.Gemm(w.Xb.View, lw.K.View, w.K.View, n, kv, h, false);
            k.Gemm(w.Xb.View, lw.V.View, w.V.View, n, kv, h, false);
            k.Rope(w.Q.View, w.K.View, w.PrefillPositions.View, w.RopeTable.View, n, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim);
            k.KvAppend(w.K.View, w.V.View, w.KCache[l].View, w.VCache[l].View, w.PrefillSlots.View, w.PrefillPositions.View, n, c.NumKeyValueHeads, c.HeadDim, MaxSeq);
            k.Attention(w.Q.View, w.KCache[l].View, w.VCache[l].View, w.PrefillSlots.View, w.PrefillPositions.View, w.AttentionOut.View,
                w.AttentionPartialAcc.View, w.AttentionPartialMl.View, w.AttentionCounters.View, n, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, MaxSeq, 1, attentionScale);
            k.Gemm(w.AttentionOut.View, lw.O.View, w.X.View, n, h, q, true);
            // MLP block: x += down(silu(gate(xb)) * up(xb))
            k.RmsNorm(w.X.View, lw.PostAttentionNorm.View, w.Xb.View, n, h, eps);
            k.Gemm(w.Xb.View, lw.Gate.View, w.Gate.View, n, inter, h, false);
            k.Gemm(w.Xb.View, lw.Up.View, w.Up.View, n, inter, h, false);
            k.SwiGlu(w.Gate.View, w.Up.View, n * inter);
            k.Gemm(w.Gate.View, lw.Down.View, w.X.View, n, h, inter, true);
        }
    }

    // ---- decode -------------------------------------------------------------------------------

    /// <summary>
    /// Sets the decode rows: row i continues the sequence in <paramref name="slots"/>[i] with input
    /// token <paramref name="tokens"/>[i] at <paramref name="positions"/>[i].
    /// </summary>
    public void SetDecodeRows(ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, ReadOnlySpan<int> tokens)
    {
        if (slots.Length > MaxBatch || slots.Length != positions.Length || slots.Length != tokens.Length)
            throw new ArgumentException("decode rows: slots, positions and tokens must have the same length, at most the max batch");
        for (int i = 0; i < positions.Length; i++)
        {
            if (positions[i] < 0 || positions[i] >= MaxSeq)
                throw new ArgumentException($"decode position {positions[i]} is outside the KV cache (max sequence length {MaxSeq}); raise --max-seq-len");
            if (tokens[i] < 0 || tokens[i] >= Config.VocabSize)
                throw new ArgumentException($"token id {tokens[i]} is outside the vocabulary (0..{Config.VocabSize - 1})");
        }
        Upload(Workspace.StepSlots, slots);
        Upload(Workspace.StepPositions, positions);
        Upload(Workspace.StepTokens, tokens);
    }

    /// <summary>Uploads new input tokens for the current decode rows (after host-side sampling).</summary>
    public void SetDecodeTokens(ReadOnlySpan<int> tokens) => Upload(Workspace.StepTokens, tokens);

    /// <summary>
    /// One decode step for the first <paramref name="batch"/> rows: every row's input token at its
    /// position goes through the model, its K/V is appended to the cache, the selection kernels
    /// run on its logits, and positions advance by one. Replayed from a recorded graph when
    /// <see cref="UseGraphs"/>.
    /// </summary>
    public void DecodeStep(int batch, SelectMode mode)
    {
        if (batch < 1 || batch > MaxBatch)
            throw new ArgumentException($"decode batch {batch} must be between 1 and {MaxBatch}");
        if (!UseGraphs)
        {
            EnqueueDecodeStep(batch, mode);
            return;
        }
        if (!graphs.TryGetValue((batch, mode), out var graph))
        {
            try
            {
                graph = LaunchGraphs.Record(Kernels, () => EnqueueDecodeStep(batch, mode));
            }
            catch (Exception e) when (Device.IsCuda && e is not ArgumentException)
            {
                // A driver that refuses the capture must not stop generation: launch directly from now on.
                UseGraphs = false;
                Warnings.Add($"CUDA graph capture failed ({e.Message}); decode kernels are launched one by one");
                stream.Synchronize();
                EnqueueDecodeStep(batch, mode);
                return;
            }
            graphs[(batch, mode)] = graph;
        }
        graph.Launch();
    }

    /// <summary>The decode forward pass: a readable list of launches, every per-step value read from device memory.</summary>
    void EnqueueDecodeStep(int b, SelectMode mode)
    {
        var c = Config;
        var w = Workspace;
        int h = c.HiddenSize, q = c.QDim, inter = c.IntermediateSize;
        var k = Kernels;

        k.MarkSeen(w.StepTokens.View, w.StepSlots.View, w.Seen.View, b, c.VocabSize);
        k.Embedding(Weights.Embedding.View, w.StepTokens.View, w.X.View, b, h);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var lw = Weights.Layers[l];
            k.RmsNorm(w.X.View, lw.InputNorm.View, w.Xb.View, b, h, eps);
            k.MatVecQkvRope(lw.Q.View, lw.K.View, lw.V.View, w.Xb.View, w.Q.View, w.KCache[l].View, w.VCache[l].View, w.RopeTable.View,
                w.StepSlots.View, w.StepPositions.View, h, b, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, MaxSeq);
            k.Attention(w.Q.View, w.KCache[l].View, w.VCache[l].View, w.StepSlots.View, w.StepPositions.View, w.AttentionOut.View,
                w.AttentionPartialAcc.View, w.AttentionPartialMl.View, w.AttentionCounters.View, b, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, MaxSeq,
                Plan.Shape.AttentionSplits, attentionScale);
            k.MatVec(lw.O.View, w.AttentionOut.View, w.X.View, h, q, b, true);
            k.RmsNorm(w.X.View, lw.PostAttentionNorm.View, w.Xb.View, b, h, eps);
            k.MatVecSwiGlu(lw.Gate.View, lw.Up.View, w.Xb.View, w.Gate.View, inter, h, b);
            k.MatVec(lw.Down.View, w.Gate.View, w.X.View, h, inter, b, true);
        }
        k.RmsNorm(w.X.View, Weights.FinalNorm.View, w.Xb.View, b, h, eps);
        k.MatVec(Weights.LmHead.View, w.Xb.View, w.Logits.View, c.VocabSize, h, b, false);
        EnqueueSelect(b, mode);
        k.AddScalar(w.StepPositions.View, b, 1);
    }

    /// <summary>
    /// Runs the selection kernels on logits rows 0..rows-1 (after prefill; decode steps include
    /// it). Rows map to cache slots through the decode slots set with <see cref="SetDecodeRows"/>.
    /// </summary>
    public void Select(int rows, SelectMode mode) => EnqueueSelect(rows, mode);

    void EnqueueSelect(int rows, SelectMode mode)
    {
        var w = Workspace;
        int vocab = Config.VocabSize;
        if (mode.RepetitionPenalty != 1f)
            Kernels.RepetitionPenalty(w.Logits.View, w.StepSlots.View, w.Seen.View, rows, vocab, mode.RepetitionPenalty);
        Kernels.LogitsReduce(w.Logits.View, w.ReducePartialMax.View, w.ReducePartialSum.View, w.ReducePartialIdx.View, w.ReduceCounters.View,
            mode.Greedy ? w.StepTokens.View : w.Argmax.View, w.MaxLogit.View, w.SumExp.View, rows, vocab, mode.Greedy ? 1f : mode.Temperature);
        if (!mode.Greedy)
            Kernels.TopK(w.Logits.View, w.TopKPartialVal.View, w.TopKPartialIdx.View, w.TopKCounters.View, w.TopKVal.View, w.TopKIdx.View, rows, vocab, mode.Candidates);
    }

    /// <summary>Reads the greedy tokens of rows 0..n-1 (waits for the device).</summary>
    public void ReadTokens(Span<int> tokens) => Download(Workspace.StepTokens, tokens);

    /// <summary>Reads the sampling candidates of rows 0..n-1 (waits for the device).</summary>
    public void ReadCandidates(int rows, int candidates, Span<float> values, Span<int> ids, Span<float> maxLogit, Span<float> sumExp)
    {
        Download(Workspace.TopKVal, values[..(rows * candidates)]);
        Download(Workspace.TopKIdx, ids[..(rows * candidates)]);
        Download(Workspace.MaxLogit, maxLogit[..rows]);
        Download(Workspace.SumExp, sumExp[..rows]);
    }

    /// <summary>Reads one full logits row (after any repetition penalty) for the host sampler's slow path.</summary>
    public void ReadLogitsRow(int row, Span<float> logits) => Download(Workspace.Logits, logits[..Config.VocabSize], (long)row * Config.VocabSize);

    /// <summary>Reads argmax tokens of rows 0..n-1 computed by a sampling-mode select (-1 marks a NaN row).</summary>
    public void ReadArgmax(Span<int> tokens) => Download(Workspace.Argmax, tokens);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var g in graphs.Values)
            g.Dispose();
        graphs.Clear();
        Workspace?.Dispose();
        Weights?.Dispose();
        if (ownsStream)
            stream.Dispose();
        Allocator.Dispose();
    }
}
