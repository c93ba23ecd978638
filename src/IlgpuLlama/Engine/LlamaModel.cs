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

/// <summary>One row of a decode step: the sequence in cache slot <paramref name="Slot"/> takes <paramref name="Token"/> at <paramref name="Position"/>.</summary>
public readonly record struct DecodeRow(int Slot, int Position, int Token);

/// <summary>What the logits selection computes for one row (one sequence) at the end of a step.</summary>
/// <param name="Greedy">argmax only</param>
/// <param name="Temperature">softmax temperature for the normaliser (sampling; &gt; 0)</param>
/// <param name="RepetitionPenalty">&gt; 0; 1 = off</param>
/// <param name="Candidates">top-k candidates returned when sampling (1..the workspace's top-k capacity)</param>
public sealed record SelectMode(bool Greedy, float Temperature, float RepetitionPenalty, int Candidates)
{
    /// <summary>Plain argmax.</summary>
    public static SelectMode ArgMax { get; } = new(true, 1f, 1f, 0);
}

/// <summary>
/// The shape of one step's selection over all its rows: all a recorded step depends on. The rows'
/// temperatures and penalties are data in device memory, so a new temperature never records a graph.
/// </summary>
/// <param name="Greedy">every row takes its argmax, which stays on the device as the next step's input</param>
/// <param name="Penalty">the repetition-penalty kernel runs (rows whose penalty is 1 come out unchanged)</param>
/// <param name="Candidates">top-k candidates returned per row (0 when greedy): the largest any row asked for</param>
public readonly record struct SelectShape(bool Greedy, bool Penalty, int Candidates)
{
    /// <summary>Plain argmax, no penalty.</summary>
    public static SelectShape ArgMax => new(true, false, 0);
}

/// <summary>
/// The selection of one step for rows 0..<see cref="Rows"/>-1 (one per sequence of the call):
/// the argmax of every row (-1 where the logits hold a NaN), and when sampling the top
/// candidates, the max logit and the softmax normaliser the host sampler needs.
/// </summary>
public sealed class StepResult
{
    internal StepResult(SelectShape shape, int[] argmax, float[]? values, int[]? ids, float[]? maxLogit, float[]? sumExp)
    {
        Shape = shape;
        ArgMax = argmax;
        CandidateLogits = values;
        CandidateIds = ids;
        MaxLogit = maxLogit;
        SumExp = sumExp;
    }

    /// <summary>The selection that ran (its candidates per row).</summary>
    public SelectShape Shape { get; }

    /// <summary>Rows of the step.</summary>
    public int Rows => ArgMax.Count;

    /// <summary>Argmax token of each row, -1 where the row's logits contain NaN.</summary>
    public IReadOnlyList<int> ArgMax { get; }

    /// <summary>[rows, candidates] largest logits, descending (sampling only).</summary>
    public float[]? CandidateLogits { get; }

    /// <summary>[rows, candidates] their token ids (sampling only).</summary>
    public int[]? CandidateIds { get; }

    /// <summary>[rows] largest logit (sampling only).</summary>
    public float[]? MaxLogit { get; }

    /// <summary>[rows] sum of exp((l - max) / T) over the vocabulary at each row's temperature (sampling only).</summary>
    public float[]? SumExp { get; }

    /// <summary>Candidate logits of row <paramref name="row"/>.</summary>
    public ReadOnlySpan<float> Logits(int row) => CandidateLogits.AsSpan(row * Shape.Candidates, Shape.Candidates);

    /// <summary>Candidate ids of row <paramref name="row"/>.</summary>
    public ReadOnlySpan<int> Ids(int row) => CandidateIds.AsSpan(row * Shape.Candidates, Shape.Candidates);
}

/// <summary>One prefill pass: up to T prompt tokens of one or more sequences, flattened.</summary>
/// <param name="Tokens">input tokens</param>
/// <param name="Positions">position of each token in its sequence</param>
/// <param name="Slots">cache slot of each token</param>
/// <param name="Sequences">index of each token's sequence in the call</param>
/// <param name="Ends">(sequence, row) of every sequence whose last prompt token is in this pass</param>
public sealed record PrefillChunk(int[] Tokens, int[] Positions, int[] Slots, int[] Sequences, IReadOnlyList<(int Sequence, int Row)> Ends)
{
    /// <summary>Tokens in the pass.</summary>
    public int Count => Tokens.Length;

    /// <summary>
    /// Cuts sequences into passes of at most <paramref name="capacity"/> tokens: the sequences are
    /// concatenated in order and the stream is cut every <paramref name="capacity"/> tokens, so a
    /// long prompt spans passes and short ones share one.
    /// </summary>
    public static IReadOnlyList<PrefillChunk> Plan(IReadOnlyList<SequenceInput> sequences, int capacity)
    {
        var flat = sequences.SelectMany((s, i) => s.Tokens.Select((tok, j) => (Seq: i, s.Slot, Pos: s.StartPosition + j, Tok: tok, Last: j == s.Tokens.Count - 1))).ToList();
        var chunks = new List<PrefillChunk>();
        for (int start = 0; start < flat.Count; start += capacity)
        {
            var part = flat.GetRange(start, Math.Min(capacity, flat.Count - start));
            var ends = part.Select((f, r) => (f, r)).Where(x => x.f.Last).Select(x => (x.f.Seq, x.r)).ToArray();
            chunks.Add(new PrefillChunk(part.Select(f => f.Tok).ToArray(), part.Select(f => f.Pos).ToArray(), part.Select(f => f.Slot).ToArray(),
                part.Select(f => f.Seq).ToArray(), ends));
        }
        return chunks;
    }
}

/// <summary>
/// Llama on an ILGPU accelerator: weights, preallocated KV cache and workspace, and the forward
/// pass as a readable list of kernel launches. Prefill runs whole prompts (GEMM + causal
/// attention); decode runs one token per sequence (GEMV + split attention). Nothing is allocated
/// on the device after construction. Each call takes all of its inputs and returns its outputs:
/// <see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> and <see cref="Decode(IReadOnlyList{DecodeRow}, SelectMode)"/> select the next token of every sequence.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    /// <summary>Decode graphs held at most (least recently used out); see <see cref="RecordedGraphs"/>.</summary>
    public const int GraphCacheCapacity = 32;

    readonly LaunchGraphCache<(int Batch, SelectShape Shape)> graphs = new(GraphCacheCapacity);
    readonly AcceleratorStream stream;
    readonly bool ownsStream;
    readonly float eps;
    readonly AttentionShape attention;
    readonly WorkspacePlan p;
    // What the decode inputs on the device hold (rows, slots, positions, tokens), so a step uploads only what changed.
    DecodeRow[] deviceRows = [];
    // What the per-row selection inputs on the device hold (rows 0..selectRowsValid-1 are current).
    readonly float[] deviceInvTemperature, devicePenalty;
    int selectRowsValid;

    LlamaModel(ComputeDevice device, LlamaConfig config, EngineOptions options)
    {
        Device = device;
        Config = config;
        Options = options;
        var accelerator = device.Accelerator;
        Format = options.ResolveFormat(config);
        ModelWeights.CheckFormat(config, Format);
        Variant = options.DecodeVariant;
        var tuning = Variant.Apply((options.Tuning ?? KernelTuning.For(accelerator)).ClampTo(accelerator));
        int maxSeq = options.MaxSeqLen ?? LongestContext(accelerator, config, options, tuning, Format);
        Plan = new MemoryPlan(config, WorkspaceShape.For(config, options.MaxBatchSize, maxSeq, tuning, options.PrefillChunk), Format);
        p = Plan.Workspace;
        CheckFits(accelerator, Plan);
        eps = (float)config.RmsNormEps;
        attention = new AttentionShape(config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim, Plan.Shape.MaxSeq);
        deviceInvTemperature = new float[Plan.Shape.MaxBatch];
        devicePenalty = new float[Plan.Shape.MaxBatch];

        Allocator = new DeviceAllocator(accelerator, options.AllocationLog);
        try
        {
            Kernels = new LlamaKernels(accelerator, tuning);
            // CUDA graphs cannot capture the legacy default stream, so the engine owns a stream.
            ownsStream = device.IsCuda;
            stream = ownsStream ? accelerator.CreateStream() : accelerator.DefaultStream;
            Kernels.Stream = stream;
            Weights = ModelWeights.Allocate(Allocator, config, Format);
            Workspace = new Workspace(Allocator, p);
            var rope = RopeTable.Build(config.RopeInverseFrequencies(), Plan.Shape.MaxSeq);
            HostCopy.Upload(stream, Workspace[p.RopeTable], rope);
            CompileKernels();
            DecodeLaunchesPerStep = Kernels.RecordLaunches(() => EnqueueDecodeStep(1, SelectShape.ArgMax)).Count;
            accelerator.Synchronize();
        }
        catch
        {
            Workspace?.Dispose();
            Weights?.Dispose();
            if (ownsStream)
                stream?.Dispose();
            Allocator.Dispose();
            throw;
        }
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

    /// <summary>How the decode step runs.</summary>
    public DecodeVariant Variant { get; }

    /// <summary>Format of the weights on the device.</summary>
    public WeightFormat Format { get; }

    /// <summary>Kernel launches of one greedy decode step (the same at every batch width).</summary>
    public int DecodeLaunchesPerStep { get; }

    /// <summary>
    /// Decode graphs held now: one per (batch width, <see cref="SelectShape"/>) met, at most
    /// <see cref="GraphCacheCapacity"/> (temperatures and penalties are data, not part of the key);
    /// the device check and /health watch it stay bounded.
    /// </summary>
    public int RecordedGraphs => graphs.Count;

    /// <summary>
    /// Host time of the last <see cref="Decode(IReadOnlyList{DecodeRow}, SelectMode)"/> before it waited for the device: validation,
    /// uploads and enqueueing (one graph launch, or every kernel launch without graphs).
    /// </summary>
    public TimeSpan LastStepHostTime { get; private set; }

    /// <summary>Whether decode steps are replayed from recorded graphs (turned off if a capture fails).</summary>
    public bool UseGraphs { get; private set; }

    /// <summary>Sequences decoded together.</summary>
    public int MaxBatch => Plan.Shape.MaxBatch;

    /// <summary>Positions per sequence.</summary>
    public int MaxSeq => Plan.Shape.MaxSeq;

    /// <summary>Warnings from loading and running (unused tensors, fp16 overflow, a fallback), for the caller to show.</summary>
    public List<EngineNotice> Warnings { get; } = [];

    /// <summary>Allocates a model with undefined weights (fill them with <see cref="ModelWeights"/> methods).</summary>
    public static LlamaModel Create(ComputeDevice device, LlamaConfig config, EngineOptions options) => new(device, config, options);

    /// <summary>Loads a Hugging Face model directory (config.json + safetensors, single or sharded).</summary>
    public static LlamaModel Load(ComputeDevice device, string modelDir, EngineOptions options, IProgress<UploadProgress>? progress = null)
    {
        if (!System.IO.Directory.Exists(modelDir))
            throw new EngineArgumentException($"{EngineParameters.Model} '{modelDir}' does not exist; give a Hugging Face Llama 3 model directory (see weights/README.md)", EngineParameter.Model);
        var config = LlamaConfig.FromDirectory(modelDir);
        using var source = SafetensorsModel.Open(modelDir);
        var warnings = LlamaConfig.ValidateWeights(config, source.Tensors, modelDir);
        var model = new LlamaModel(device, config, options);
        try
        {
            model.Warnings.AddRange(warnings.Select(w => new EngineNotice(w)));
            var stats = model.Weights.Upload(source, device.Accelerator, progress);
            string keep = $"{EngineParameters.WeightFormat} bf16";
            // An infinite weight makes every output it touches inf or NaN: refuse it here, not as NaN logits later.
            if (stats.Overflows > 0)
                throw new EngineStateException(
                    $"{stats.Overflows:N0} weights of {modelDir} exceed the fp16 range (|x| > 65504) and would become +-inf; load with {keep} to keep them",
                    EngineParameter.WeightFormat);
            if (stats.FlushedToZero > 0)
                model.Warnings.Add(new($"{stats.FlushedToZero:N0} tiny weights flushed to zero in fp16 (harmless in practice; {keep} keeps them)"));
            if (stats.Subnormals > 0)
                model.Warnings.Add(new($"{stats.Subnormals:N0} weights became fp16 subnormals and keep fewer significant bits (harmless in practice; {keep} keeps them exact)"));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>Device memory kept free beside the model when the context length is chosen automatically (CUDA context, graphs, fragmentation).</summary>
    static long Headroom(long free) => Math.Max(256L << 20, free / 50);

    static long FreeBytes(Accelerator accelerator) => accelerator is ILGPU.Runtime.Cuda.CudaAccelerator cuda ? cuda.GetFreeMemory() : accelerator.MemorySize;

    /// <summary>
    /// The longest context (positions per sequence) whose KV cache fits the device beside the
    /// weights and workspace at the options' batch, at most the model's maximum and
    /// <see cref="DefaultContextCap(Accelerator)"/>; a multiple of 256 when it is shorter than that.
    /// When not even one position fits, the cap is returned and loading fails with the out-of-memory message.
    /// </summary>
    public static int LongestContext(Accelerator accelerator, LlamaConfig config, EngineOptions options, KernelTuning tuning, WeightFormat format)
    {
        long free = FreeBytes(accelerator);
        return LongestContext(free - Headroom(free), Math.Min(config.MaxPositionEmbeddings, DefaultContextCap(accelerator)), config, options, tuning, format);
    }

    /// <summary>The longest context up to <paramref name="cap"/> whose memory plan fits <paramref name="availableBytes"/> (see the accelerator overload).</summary>
    public static int LongestContext(long availableBytes, int cap, LlamaConfig config, EngineOptions options, KernelTuning tuning, WeightFormat format)
    {
        bool Fits(int seq) => new MemoryPlan(config, WorkspaceShape.For(config, options.MaxBatchSize, seq, tuning, options.PrefillChunk), format).TotalBytes <= availableBytes;
        if (Fits(cap) || !Fits(1))
            return cap;
        int lo = 1, hi = cap;
        while (lo < hi)
        {
            int mid = lo + (hi - lo + 1) / 2;
            if (Fits(mid))
                lo = mid;
            else
                hi = mid - 1;
        }
        return lo >= 256 ? lo / 256 * 256 : lo;
    }

    /// <summary>The longest context chosen automatically on <paramref name="accelerator"/>.</summary>
    public static int DefaultContextCap(Accelerator accelerator) =>
        accelerator is ILGPU.Runtime.CPU.CPUAccelerator ? WorkspaceShape.DefaultCpuContextCap : WorkspaceShape.DefaultContextCap;

    static void CheckFits(Accelerator accelerator, MemoryPlan plan)
    {
        long free = FreeBytes(accelerator);
        if (plan.TotalBytes > free)
            throw new DeviceOutOfMemoryException(
                $"the model needs {DeviceAllocator.Gb(plan.TotalBytes)} (weights {DeviceAllocator.Gb(plan.WeightBytes)} + KV cache {DeviceAllocator.Gb(plan.KvCacheBytes)} + activations {DeviceAllocator.Gb(plan.ActivationBytes)}), " +
                $"the device has {DeviceAllocator.Gb(free)} free; lower {EngineParameters.MaxBatchSize} or {EngineParameters.MaxSeqLen}");
    }

    /// <summary>
    /// Compiles every kernel the forward passes launch, at every decode batch width, by recording
    /// (not running) each pass once, so no compilation happens while generating.
    /// </summary>
    void CompileKernels() => Kernels.RecordLaunches(() =>
    {
        EnqueuePrefillLayers(1);
        for (int b = 1; b <= MaxBatch; b++)
            EnqueueDecodeStep(b, SelectShape.ArgMax);
        EnqueueSelect(1, new SelectShape(false, true, Plan.Shape.TopKCapacity));
    });

    // ---- host <-> device helpers -------------------------------------------------------------

    void Upload<T>(ArrayView<T> view, ReadOnlySpan<T> data)
        where T : unmanaged
    {
        HostCopy.Upload(stream, view, data);
    }

    T[] Download<T>(ArrayView<T> view, long count, long offset = 0)
        where T : unmanaged
    {
        var data = new T[count];
        Download(view, data, offset);
        return data;
    }

    void Download<T>(ArrayView<T> view, Span<T> data, long offset = 0)
        where T : unmanaged
    {
        HostCopy.Download(stream, view.SubView(offset, data.Length), data);
    }

    /// <summary>Waits for all queued work.</summary>
    public void Synchronize() => stream.Synchronize();

    // ---- prefill ------------------------------------------------------------------------------

    /// <summary>
    /// Runs prompts through the model, writing their keys and values into their cache slots, and
    /// selects each sequence's next token from its last token's logits (row i = sequence i).
    /// Prompts longer than the prefill workspace are processed in chunks.
    /// </summary>
    public StepResult Prefill(IReadOnlyList<SequenceInput> sequences, SelectMode mode) => Prefill(sequences, Uniform(mode, sequences.Count));

    /// <summary><see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> with a selection per sequence (one pass for all).</summary>
    public StepResult Prefill(IReadOnlyList<SequenceInput> sequences, IReadOnlyList<SelectMode> modes)
    {
        ValidateInputs(sequences);
        CheckModes(modes, sequences.Count);
        int h = Config.HiddenSize, n = sequences.Count;
        ResetSeen(sequences);
        foreach (var chunk in PrefillChunk.Plan(sequences, Plan.Shape.PrefillTokens))
        {
            RunPrefillChunk(chunk);
            foreach (var (seq, _) in chunk.Ends)
                Kernels.GatherRows(Workspace[p.X], Workspace[p.LastRows].SubView(seq, 1), Workspace[p.LastHidden].SubView((long)seq * h, h), 1, h);
        }
        Kernels.RmsNorm(Workspace[p.LastHidden], Weights.FinalNorm.Vector, Workspace[p.Xb], n, h, eps);
        LmHead(Workspace[p.Xb], n, null, inputPadded: true);
        // Row i selects for sequence i: its slot (repetition-penalty flags) and the next decode inputs.
        var rows = sequences.Select(s => new DecodeRow(s.Slot, s.StartPosition + s.Tokens.Count, 0)).ToArray();
        SetDeviceRows(rows, uploadTokens: false);
        return SelectAndRead(n, SetSelection(modes));
    }

    /// <summary>
    /// Runs prompts through the model like <see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> but hands the logits of every
    /// token to <paramref name="onLogits"/> (sequence index, position, row; row t predicts token
    /// t + 1) instead of selecting a next token.
    /// </summary>
    public void PrefillLogits(IReadOnlyList<SequenceInput> sequences, Action<int, int, ReadOnlySpan<float>> onLogits)
    {
        ValidateInputs(sequences);
        int h = Config.HiddenSize, vocab = Config.VocabSize;
        ResetSeen(sequences);
        var rows = new float[MaxBatch * vocab];
        foreach (var chunk in PrefillChunk.Plan(sequences, Plan.Shape.PrefillTokens))
        {
            RunPrefillChunk(chunk);
            Kernels.RmsNorm(Workspace[p.X], Weights.FinalNorm.Vector, Workspace[p.Xb], chunk.Count, h, eps);
            // The LM head runs over at most max-batch rows at a time (the logits buffer's height).
            for (int r = 0; r < chunk.Count; r += MaxBatch)
            {
                int count = Math.Min(MaxBatch, chunk.Count - r);
                LmHead(Workspace[p.Xb].SubView((long)r * h), count, null, inputPadded: false);
                var span = rows.AsSpan(0, count * vocab);
                Download(Workspace[p.Logits], span);
                for (int i = 0; i < count; i++)
                    onLogits(chunk.Sequences[r + i], chunk.Positions[r + i], span.Slice(i * vocab, vocab));
            }
        }
    }

    /// <summary>
    /// Logits rows 0..rows-1 of <paramref name="input"/> (normed, or raw with the final norm fused).
    /// The matvec reads whole tiles of 4 input rows beyond 4; where <paramref name="input"/> may hold
    /// fewer (last-token hidden states), the partial tile is launched on its own.
    /// </summary>
    void LmHead(ArrayView<float> input, int rows, FusedNorm? norm, bool inputPadded)
    {
        int h = Config.HiddenSize, vocab = Config.VocabSize;
        int whole = inputPadded || rows <= BatchWidth.Max ? rows : rows / BatchWidth.Max * BatchWidth.Max;
        Kernels.MatVec(Weights.LmHead.Matrix, input, Workspace[p.Logits], whole, false, norm: norm);
        if (whole < rows)
            Kernels.MatVec(Weights.LmHead.Matrix, input.SubView((long)whole * h), Workspace[p.Logits].SubView((long)whole * vocab), rows - whole, false, norm: norm);
    }

    void ResetSeen(IReadOnlyList<SequenceInput> sequences)
    {
        foreach (var s in sequences.Where(s => s.StartPosition == 0))
            Workspace[p.Seen].SubView((long)s.Slot * Config.VocabSize, Config.VocabSize).MemSetToZero(stream);
    }

    /// <summary>Uploads one chunk's inputs and runs the prefill layers over them; the residual of every token is left in act.x.</summary>
    void RunPrefillChunk(PrefillChunk chunk)
    {
        var lastRows = new int[MaxBatch];
        foreach (var (seq, row) in chunk.Ends)
            lastRows[seq] = row;
        Upload(Workspace[p.PrefillTokens], chunk.Tokens);
        Upload(Workspace[p.PrefillPositions], chunk.Positions);
        Upload(Workspace[p.PrefillSlots], chunk.Slots);
        Upload(Workspace[p.LastRows], lastRows);
        EnqueuePrefillLayers(chunk.Count);
    }

    void ValidateInputs(IReadOnlyList<SequenceInput> sequences)
    {
        if (sequences.Count == 0 || sequences.Count > MaxBatch)
            throw new EngineArgumentException($"{sequences.Count} sequences given; between 1 and {EngineParameters.MaxBatchSize} {MaxBatch} can run together", EngineParameter.MaxBatchSize);
        var seenSlots = new HashSet<int>();
        foreach (var s in sequences)
        {
            if (s.Slot < 0 || s.Slot >= MaxBatch || !seenSlots.Add(s.Slot))
                throw new EngineArgumentException($"cache slot {s.Slot} is invalid or used twice (slots are 0..{MaxBatch - 1})");
            if (s.Tokens.Count == 0)
                throw new EngineArgumentException("a prompt has no tokens; give at least one token");
            if (s.StartPosition < 0 || s.StartPosition + s.Tokens.Count > MaxSeq)
                throw new EngineArgumentException(
                    $"a prompt of {s.Tokens.Count} tokens starting at position {s.StartPosition} exceeds {EngineParameters.MaxSeqLen} {MaxSeq}; shorten it or raise {EngineParameters.MaxSeqLen}",
                    EngineParameter.MaxSeqLen);
            foreach (int tok in s.Tokens)
                CheckToken(tok);
        }
    }

    void CheckToken(int token)
    {
        if (token < 0 || token >= Config.VocabSize)
            throw new EngineArgumentException($"token id {token} is outside the vocabulary (0..{Config.VocabSize - 1})", EngineParameter.Tokens);
    }

    /// <summary>The prefill forward pass over the first <paramref name="n"/> rows of the prefill inputs.</summary>
    void EnqueuePrefillLayers(int n)
    {
        var c = Config;
        var w = Workspace;
        int h = c.HiddenSize, inter = c.IntermediateSize;
        var k = Kernels;
        var tokens = w[p.PrefillTokens];
        var positions = w[p.PrefillPositions];
        var slots = w[p.PrefillSlots];

        k.Embedding(Weights.Embedding.Matrix, tokens, w[p.X], n);
        k.MarkSeen(tokens, slots, w[p.Seen], n, c.VocabSize);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var lw = Weights.Layers[l];
            // attention block: x += o_proj(attention(rope(q), cache(rope(k), v)))
            k.RmsNorm(w[p.X], lw.InputNorm.Vector, w[p.Xb], n, h, eps);
            k.Gemm(w[p.Xb], lw.Q.Matrix, w[p.Q], n, false);
            k.Gemm(w[p.Xb], lw.K.Matrix, w[p.K], n, false);
            k.Gemm(w[p.Xb], lw.V.Matrix, w[p.V], n, false);
            k.Rope(w[p.Q], w[p.K], positions, w[p.RopeTable], n, attention);
            k.KvAppend(w[p.K], w[p.V], w[p.KCache[l]], w[p.VCache[l]], slots, positions, n, attention.Cache);
            k.Attention(AttentionBuffers(l, slots, positions), n, 1, attention);
            k.Gemm(w[p.AttentionOut], lw.O.Matrix, w[p.X], n, true);
            // MLP block: x += down(silu(gate(xb)) * up(xb))
            k.RmsNorm(w[p.X], lw.PostAttentionNorm.Vector, w[p.Xb], n, h, eps);
            k.Gemm(w[p.Xb], lw.Gate.Matrix, w[p.Gate], n, false);
            k.Gemm(w[p.Xb], lw.Up.Matrix, w[p.Up], n, false);
            k.SwiGlu(w[p.Gate], w[p.Up], n * inter);
            k.Gemm(w[p.Gate], lw.Down.Matrix, w[p.X], n, true);
        }
    }

    AttentionBuffers AttentionBuffers(int layer, ArrayView<int> slots, ArrayView<int> positions)
    {
        var w = Workspace;
        return new AttentionBuffers(w[p.Q], w[p.KCache[layer]], w[p.VCache[layer]], slots, positions, w[p.AttentionOut],
            w[p.AttentionPartialAcc], w[p.AttentionPartialMl], w[p.AttentionCounters]);
    }

    // ---- decode -------------------------------------------------------------------------------

    /// <summary>
    /// One decode step: row i feeds <paramref name="rows"/>[i].Token at its position through the
    /// model for the sequence in its cache slot, appends its K/V to the cache, and selects the
    /// next token. Only inputs that differ from what the device already holds are uploaded (after a
    /// greedy step the chosen tokens and advanced positions are already there). Replayed from a
    /// recorded graph when <see cref="UseGraphs"/>.
    /// </summary>
    public StepResult Decode(IReadOnlyList<DecodeRow> rows, SelectMode mode) => Decode(rows, Uniform(mode, rows.Count));

    /// <summary>
    /// <see cref="Decode(IReadOnlyList{DecodeRow}, SelectMode)"/> with a selection per row: one pass
    /// for all of them (each row's temperature and penalty are its own; greedy rows read their argmax).
    /// </summary>
    public StepResult Decode(IReadOnlyList<DecodeRow> rows, IReadOnlyList<SelectMode> modes)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        int b = rows.Count;
        if (b < 1 || b > MaxBatch)
            throw new EngineArgumentException($"decode batch {b} must be between 1 and {EngineParameters.MaxBatchSize} {MaxBatch}", EngineParameter.MaxBatchSize);
        CheckModes(modes, b);
        var slots = new HashSet<int>();
        foreach (var r in rows)
        {
            if (r.Slot < 0 || r.Slot >= MaxBatch || !slots.Add(r.Slot))
                throw new EngineArgumentException($"cache slot {r.Slot} is invalid or used twice (slots are 0..{MaxBatch - 1})");
            if (r.Position < 0 || r.Position >= MaxSeq)
                throw new EngineArgumentException(
                    $"decode position {r.Position} is outside the KV cache (max sequence length {MaxSeq}); raise {EngineParameters.MaxSeqLen}", EngineParameter.MaxSeqLen);
            CheckToken(r.Token);
        }
        SetDeviceRows(rows, uploadTokens: true);
        var shape = SetSelection(modes);
        LaunchDecodeStep(b, shape);
        LastStepHostTime = System.Diagnostics.Stopwatch.GetElapsedTime(started);
        // The step advanced the positions on the device; greedy selection wrote the chosen tokens into the inputs.
        var result = ReadSelection(b, shape);
        deviceRows = rows.Select((r, i) => new DecodeRow(r.Slot, r.Position + 1, shape.Greedy ? result.ArgMax[i] : r.Token)).ToArray();
        return result;
    }

    static SelectMode[] Uniform(SelectMode mode, int rows)
    {
        ArgumentNullException.ThrowIfNull(mode);
        return Enumerable.Repeat(mode, Math.Max(rows, 0)).ToArray();
    }

    void CheckModes(IReadOnlyList<SelectMode> modes, int rows)
    {
        ArgumentNullException.ThrowIfNull(modes);
        if (modes.Count != rows)
            throw new EngineArgumentException($"{modes.Count} selection modes given for {rows} rows; give one per row");
        foreach (var m in modes)
        {
            ArgumentNullException.ThrowIfNull(m, nameof(modes));
            if (!(m.RepetitionPenalty > 0) || !float.IsFinite(m.RepetitionPenalty))
                throw new EngineArgumentException($"repetition penalty {m.RepetitionPenalty} must be a finite number > 0 (1 = off)");
            if (!m.Greedy && (!(m.Temperature > 0) || !float.IsFinite(m.Temperature)))
                throw new EngineArgumentException($"temperature {m.Temperature} must be a finite number > 0 when sampling");
            if (!m.Greedy && (m.Candidates < 1 || m.Candidates > Plan.Shape.TopKCapacity))
                throw new EngineArgumentException($"{m.Candidates} sampling candidates must be between 1 and {Plan.Shape.TopKCapacity}");
        }
    }

    /// <summary>
    /// Makes the device's per-row selection inputs (1 / temperature, repetition penalty) equal
    /// <paramref name="modes"/>, uploading only when they differ, and returns the step's shape.
    /// </summary>
    SelectShape SetSelection(IReadOnlyList<SelectMode> modes)
    {
        int n = modes.Count;
        var invT = modes.Select(m => m.Greedy ? 1f : LogitsKernels.InverseTemperature(m.Temperature)).ToArray();
        var penalty = modes.Select(m => m.RepetitionPenalty).ToArray();
        bool Same(float[] device, float[] wanted) => n <= selectRowsValid && device.AsSpan(0, n).SequenceEqual(wanted);
        if (!Same(deviceInvTemperature, invT) || !Same(devicePenalty, penalty))
        {
            Upload(Workspace[p.SelectInvTemperature].SubView(0, n), invT);
            Upload(Workspace[p.SelectPenalty].SubView(0, n), penalty);
            invT.CopyTo(deviceInvTemperature, 0);
            penalty.CopyTo(devicePenalty, 0);
            selectRowsValid = Math.Max(selectRowsValid, n);
        }
        bool greedy = modes.All(m => m.Greedy);
        return new SelectShape(greedy, penalty.Any(v => v != 1f), greedy ? 0 : modes.Where(m => !m.Greedy).Max(m => m.Candidates));
    }

    /// <summary>The logits of row <paramref name="row"/> of the most recent <see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> or <see cref="Decode(IReadOnlyList{DecodeRow}, SelectMode)"/> (after any repetition penalty).</summary>
    public void ReadLogitsRow(int row, Span<float> logits) => Download(Workspace[p.Logits], logits[..Config.VocabSize], (long)row * Config.VocabSize);

    /// <summary>Makes the device's decode inputs equal <paramref name="rows"/>, uploading only the arrays that differ.</summary>
    void SetDeviceRows(IReadOnlyList<DecodeRow> rows, bool uploadTokens)
    {
        int n = rows.Count;
        bool sameRows = deviceRows.Length == n;
        bool Differs(Func<DecodeRow, int> field) => !sameRows || Enumerable.Range(0, n).Any(i => field(rows[i]) != field(deviceRows[i]));
        if (Differs(r => r.Slot))
            Upload(Workspace[p.StepSlots], rows.Select(r => r.Slot).ToArray());
        if (Differs(r => r.Position))
            Upload(Workspace[p.StepPositions], rows.Select(r => r.Position).ToArray());
        if (uploadTokens && Differs(r => r.Token))
            Upload(Workspace[p.StepTokens], rows.Select(r => r.Token).ToArray());
        deviceRows = uploadTokens ? [.. rows] : rows.Select(r => r with { Token = -1 }).ToArray();
    }

    void LaunchDecodeStep(int batch, SelectShape shape)
    {
        if (!UseGraphs)
        {
            EnqueueDecodeStep(batch, shape);
            return;
        }
        ILaunchGraph graph;
        try
        {
            graph = graphs.GetOrRecord((batch, shape), () => LaunchGraphs.Record(Kernels, () => EnqueueDecodeStep(batch, shape)));
        }
        catch (Exception e) when (Device.IsCuda && e is not ArgumentException)
        {
            // A driver that refuses the capture must not stop generation: launch directly from now on.
            UseGraphs = false;
            Warnings.Add(new($"CUDA graph capture failed ({e.Message}); decode kernels are launched one by one"));
            stream.Synchronize();
            EnqueueDecodeStep(batch, shape);
            return;
        }
        graph.Launch();
    }

    /// <summary>The decode forward pass: a readable list of launches, every per-step value read from device memory.</summary>
    void EnqueueDecodeStep(int b, SelectShape shape)
    {
        var c = Config;
        var w = Workspace;
        int h = c.HiddenSize;
        var k = Kernels;
        var tokens = w[p.StepTokens];
        var positions = w[p.StepPositions];
        var slots = w[p.StepSlots];

        k.MarkSeen(tokens, slots, w[p.Seen], b, c.VocabSize);
        k.Embedding(Weights.Embedding.Matrix, tokens, w[p.X], b);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var lw = Weights.Layers[l];
            var (xn, norm) = NormedInput(lw.InputNorm, b);
            k.MatVecQkvRope(lw.Qkv, xn, w[p.Q], w[p.KCache[l]], w[p.VCache[l]], w[p.RopeTable], slots, positions, b, attention, norm);
            k.Attention(AttentionBuffers(l, slots, positions), b, Plan.Shape.AttentionSplits, attention);
            k.MatVec(lw.O.Matrix, w[p.AttentionOut], w[p.X], b, true);
            (xn, norm) = NormedInput(lw.PostAttentionNorm, b);
            k.MatVecSwiGlu(lw.Gate.Matrix, lw.Up.Matrix, xn, w[p.Gate], b, norm);
            k.MatVec(lw.Down.Matrix, w[p.Gate], w[p.X], b, true);
        }
        var (xf, finalNorm) = NormedInput(Weights.FinalNorm, b);
        LmHead(xf, b, finalNorm, inputPadded: true);
        EnqueueSelect(b, shape);
        k.AddScalar(positions, b, 1);
    }

    /// <summary>
    /// The input of a matvec that consumes rmsnorm(x) of the residual x: x itself with the norm
    /// fused into the matvec, or (baseline) act.xb after an RMSNorm launch.
    /// </summary>
    (ArrayView<float> Input, FusedNorm? Norm) NormedInput(DeviceWeight normWeight, int rows)
    {
        var x = Workspace[p.X];
        if (Variant.FuseNorms)
            return (x, new FusedNorm(normWeight.Vector, eps));
        Kernels.RmsNorm(x, normWeight.Vector, Workspace[p.Xb], rows, Config.HiddenSize, eps);
        return (Workspace[p.Xb], null);
    }

    /// <summary>
    /// Selection kernels over logits rows 0..rows-1 (rows map to cache slots through the decode
    /// slots); each row's temperature and penalty are read from the device (<see cref="SetSelection"/>).
    /// </summary>
    void EnqueueSelect(int rows, SelectShape shape)
    {
        var w = Workspace;
        int vocab = Config.VocabSize;
        var invTemperature = w[p.SelectInvTemperature].SubView(0, rows);
        if (shape.Penalty)
            Kernels.RepetitionPenalty(w[p.Logits], w[p.StepSlots], w[p.Seen], w[p.SelectPenalty].SubView(0, rows), rows, vocab);
        // Greedy writes the argmax straight into the next step's input tokens.
        var reduce = new LogitsReduceBuffers(w[p.ReducePartialMax], w[p.ReducePartialSum], w[p.ReducePartialIdx], w[p.ReduceCounters],
            shape.Greedy ? w[p.StepTokens] : w[p.Argmax], w[p.MaxLogit], w[p.SumExp]);
        Kernels.LogitsReduce(w[p.Logits], reduce, invTemperature, rows, vocab);
        if (!shape.Greedy)
            Kernels.TopK(w[p.Logits], new TopKBuffers(w[p.TopKPartialVal], w[p.TopKPartialIdx], w[p.TopKCounters], w[p.TopKVal], w[p.TopKIdx]), rows, vocab, shape.Candidates);
    }

    StepResult SelectAndRead(int rows, SelectShape shape)
    {
        EnqueueSelect(rows, shape);
        var result = ReadSelection(rows, shape);
        if (shape.Greedy)
            deviceRows = deviceRows.Select((r, i) => r with { Token = result.ArgMax[i] }).ToArray();
        return result;
    }

    /// <summary>Reads the selection of rows 0..rows-1 (the one read-back of a step; waits for the device).</summary>
    StepResult ReadSelection(int rows, SelectShape shape)
    {
        var w = Workspace;
        if (shape.Greedy)
            return new StepResult(shape, Download(w[p.StepTokens], rows), null, null, null, null);
        int c = shape.Candidates;
        return new StepResult(shape, Download(w[p.Argmax], rows), Download(w[p.TopKVal], rows * c), Download(w[p.TopKIdx], rows * c),
            Download(w[p.MaxLogit], rows), Download(w[p.SumExp], rows));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        graphs.Dispose();
        Workspace?.Dispose();
        Weights?.Dispose();
        if (ownsStream)
            stream.Dispose();
        Allocator.Dispose();
    }
}
