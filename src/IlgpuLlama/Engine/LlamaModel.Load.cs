using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Gguf;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Engine;

// Loading: the memory plan, the allocation of weights and workspace, kernel compilation, the
// longest context that fits, and disposal. The forward pass is in LlamaModel.cs.
public sealed partial class LlamaModel
{
    /// <summary>Decode graphs held at most (least recently used out); see <see cref="RecordedGraphs"/>.</summary>
    public const int GraphCacheCapacity = 32;

    readonly LaunchGraphCache<(int Batch, SelectShape Shape)> graphs = new(GraphCacheCapacity);
    readonly AcceleratorStream stream;
    readonly bool ownsStream;
    readonly float eps;
    readonly AttentionShape attention;
    // The workspace's buffers: act[buf.X] is the view of buffer X (act = Workspace in the forward pass).
    readonly WorkspacePlan buf;
    readonly DeviceInputs inputs;

    LlamaModel(ComputeDevice device, LlamaConfig config, EngineOptions options, WeightLayout? sourceLayout = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Device = device;
        Config = config;
        Options = options;
        var accelerator = device.Accelerator;
        // A GGUF model loads in its own formats unless the options ask for one.
        Layout = sourceLayout is { } own && options.WeightFormat is null && options.WeightMix is null ? own : options.ResolveLayout(config);
        Format = Layout.Main;
        ModelWeights.CheckFormat(config, Layout);
        Variant = options.DecodeVariant;
        // Enums set from a library caller's own value: refused by name, not read as the default.
        if (!KvCacheTypes.All.Contains(options.KvCacheType))
            throw new EngineArgumentException(
                $"{EngineParameters.KvCacheType} {(int)options.KvCacheType} is not a KV-cache type; use one of {string.Join(", ", KvCacheTypes.All.Select(t => t.Name()))}", EngineParameter.KvCacheType);
        if (!Accumulations.All.Contains(options.Accumulation))
            throw new EngineArgumentException(
                $"{EngineParameters.Accumulation} {(int)options.Accumulation} is not an accumulation; use one of {string.Join(", ", Accumulations.All.Select(a => a.Name()))}", EngineParameter.Accumulation);
        var tuning = Variant.Apply((options.Tuning ?? KernelTuning.For(accelerator)).ClampTo(accelerator));
        if (Variant.OneLaunchPerLayer && Layout.IsMixed)
            throw new EngineArgumentException(
                $"the persistent decode variant runs each layer as one kernel of one weight format, and this model mixes {Layout.Name} ({Layout.Describe(config)}); use the fused-norm variant, or load it in one format with {EngineParameters.WeightFormat}",
                EngineParameter.WeightFormat);
        if (Variant.OneLaunchPerLayer && options.KvCacheType != KvCacheType.Fp16)
            throw new EngineArgumentException(
                $"the persistent decode variant reads an fp16 KV cache, and {EngineParameters.KvCacheType} {options.KvCacheType.Name()} was asked for; use the fused-norm variant with an {options.KvCacheType.Name()} cache",
                EngineParameter.KvCacheType);
        if (options.Accumulation == Accumulation.Fp64 && Variant != DecodeVariant.Baseline)
            throw new EngineArgumentException(
                $"float64 accumulation ({EngineParameters.Accumulation} fp64) runs the decode layers as the prefill does and takes the baseline decode variant, and the {Variant.Name} variant was asked for; leave the decode variant at baseline",
                EngineParameter.Accumulation);
        int maxSeq = options.MaxSeqLen ?? LongestContext(accelerator, config, options, tuning, Layout);
        Plan = new MemoryPlan(config, WorkspaceShape.For(config, options.MaxBatchSize, maxSeq, tuning, options.PrefillChunk, options.KvCacheType), Layout);
        buf = Plan.Workspace;
        CheckFits(accelerator, Plan);
        eps = (float)config.RmsNormEps;
        attention = new AttentionShape(config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim, Plan.Shape.MaxSeq, Plan.Shape.KvCache);

        var plan = clock.Elapsed;
        Allocator = new DeviceAllocator(accelerator, options.AllocationLog);
        try
        {
            Kernels = new LlamaKernels(accelerator, tuning);
            // CUDA graphs cannot capture the legacy default stream, so the engine owns a stream.
            ownsStream = device.IsCuda;
            stream = ownsStream ? accelerator.CreateStream() : accelerator.DefaultStream;
            Kernels.Stream = stream;
            Weights = ModelWeights.Allocate(Allocator, config, Layout);
            Workspace = new Workspace(Allocator, buf);
            inputs = new DeviceInputs(stream, Workspace, buf);
            var rope = RopeTable.Build(config.RopeInverseFrequencies(), Plan.Shape.MaxSeq);
            HostCopy.Upload(stream, Workspace[buf.RopeTable], rope);
            var allocated = clock.Elapsed;
            CompileKernels();
            DecodeLaunchesPerStep = Kernels.RecordLaunches(() => EnqueueDecodeStep(1, SelectShape.ArgMax)).Count;
            accelerator.Synchronize();
            Timings = new LoadTimings(plan, allocated - plan, clock.Elapsed - allocated, Kernels.LoadedCount, TimeSpan.Zero, TimeSpan.Zero);
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

    /// <summary>Where the load's time went (the weights' part is zero for a model made with <see cref="Create"/>).</summary>
    public LoadTimings Timings { get; private set; }

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

    /// <summary>Format of the weights on the device (the main one of a mix).</summary>
    public WeightFormat Format { get; }

    /// <summary>The format of every matrix: one format, or a GGUF file's mix.</summary>
    public WeightLayout Layout { get; }

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
        if (GgufLocation.Find(modelDir) is string gguf)
            return LoadGguf(device, gguf, options, progress);
        if (!System.IO.Directory.Exists(modelDir))
            throw new EngineArgumentException($"{EngineParameters.Model} '{modelDir}' does not exist; give a Hugging Face Llama 3 model directory (see weights/README.md)", EngineParameter.Model);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var config = LlamaConfig.FromDirectory(modelDir);
        using var source = SafetensorsModel.Open(modelDir);
        var warnings = LlamaConfig.ValidateWeights(config, source.Tensors, modelDir);
        var opened = clock.Elapsed;
        var model = new LlamaModel(device, config, options);
        try
        {
            model.Warnings.AddRange(warnings.Select(w => new EngineNotice(w)));
            var built = clock.Elapsed;
            model.AddConversionNotices(model.Weights.Upload(source, device.Accelerator, progress), modelDir);
            model.Timings = model.Timings with { Files = opened, Weights = clock.Elapsed - built };
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>
    /// Loads a GGUF model (a file, the first part of a split set, or an Ollama blob): configuration and
    /// weights from the file, in the file's format unless the options name another (K-quants and mixed
    /// files load as q8_0 until the K-quant kernels exist).
    /// </summary>
    public static LlamaModel LoadGguf(ComputeDevice device, string path, EngineOptions options, IProgress<UploadProgress>? progress = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var source = GgufModel.Open(path);
        var config = GgufLlama.ReadConfig(source);
        var warnings = GgufLlama.ValidateTensors(source, config);
        var opened = clock.Elapsed;
        var model = new LlamaModel(device, config, options, GgufLlama.DefaultLayout(source, config));
        try
        {
            model.Warnings.AddRange(warnings.Select(w => new EngineNotice(w)));
            var converted = config.ExpectedTensors().Where(t => t.Shape.Length == 2 && GgufLlama.Tensor(source, t.Name).Type is var type
                && type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16) && GgufRows.BlockType(model.Layout.For(t.Name)) != type).ToList();
            string what = string.Join(", ", converted.Select(t => $"{GgufLlama.Tensor(source, t.Name).Name} {GgmlTypes.Name(GgufLlama.Tensor(source, t.Name).Type)} as {model.Layout.For(t.Name).Name}").Take(3))
                + (converted.Count > 3 ? ", ..." : "");
            if (converted.Count > 0)
                model.Warnings.Add(new(options.WeightFormat is not null
                    ? $"{converted.Count} of the file's quantised matrices are dequantised and stored as {model.Layout.Name} on the device, as {EngineParameters.WeightFormat} asks ({what})"
                    : $"{converted.Count} of the file's matrices are stored again in the format of the matrix one fused kernel reads with them, q with k and gate with up ({what})"));
            if (source.Head.GetString("tokenizer.chat_template") is string template && !GgufLlama.IsLlama3Template(template))
                model.Warnings.Add(new("the file's chat template is not Llama 3's; chat and serve format conversations with the built-in Llama 3 template"));
            var built = clock.Elapsed;
            model.AddConversionNotices(model.Weights.Upload(source, config.HeadDim, device.Accelerator, progress), path);
            model.Timings = model.Timings with { Files = opened, Weights = clock.Elapsed - built };
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>Refuses weights that overflowed fp16 and notes flushed or subnormal ones.</summary>
    void AddConversionNotices(Safetensors.ConversionStats stats, string modelDir)
    {
        string keep = $"{EngineParameters.WeightFormat} bf16";
            // An infinite weight makes every output it touches inf or NaN: refuse it here, not as NaN logits later.
        if (stats.Overflows > 0)
            throw new EngineStateException(
                $"{stats.Overflows:N0} weights of {modelDir} exceed the fp16 range (|x| > 65504) and would become +-inf; load with {keep} to keep them",
                EngineParameter.WeightFormat);
        if (stats.FlushedToZero > 0)
            Warnings.Add(new($"{stats.FlushedToZero:N0} tiny weights flushed to zero in fp16 (harmless in practice; {keep} keeps them)"));
        if (stats.Subnormals > 0)
            Warnings.Add(new($"{stats.Subnormals:N0} weights became fp16 subnormals and keep fewer significant bits (harmless in practice; {keep} keeps them exact)"));
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
    public static int LongestContext(Accelerator accelerator, LlamaConfig config, EngineOptions options, KernelTuning tuning, WeightLayout format)
    {
        long free = FreeBytes(accelerator);
        return LongestContext(free - Headroom(free), Math.Min(config.MaxPositionEmbeddings, DefaultContextCap(accelerator)), config, options, tuning, format);
    }

    /// <summary>The longest context up to <paramref name="cap"/> whose memory plan fits <paramref name="availableBytes"/> (see the accelerator overload).</summary>
    public static int LongestContext(long availableBytes, int cap, LlamaConfig config, EngineOptions options, KernelTuning tuning, WeightLayout format)
    {
        bool Fits(int seq)
        {
            try
            {
                return new MemoryPlan(config, WorkspaceShape.For(config, options.MaxBatchSize, seq, tuning, options.PrefillChunk, options.KvCacheType), format).TotalBytes <= availableBytes;
            }
            catch (EngineArgumentException)
            {
                return false; // past the kernels' 32-bit cache offsets (or another limit, which the load then names)
            }
        }
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
    /// Compiles every kernel the forward passes launch, at every decode batch width, by going through
    /// (not running) each pass once, so no compilation happens while generating; the distinct
    /// specialisations compile concurrently (<see cref="LlamaKernels.Precompile"/>).
    /// </summary>
    void CompileKernels() => Kernels.Precompile(() =>
    {
        EnqueuePrefillLayers(1);
        for (int b = 1; b <= MaxBatch; b++)
            EnqueueDecodeStep(b, SelectShape.ArgMax);
        EnqueueSelect(1, new SelectShape(false, true, Plan.Shape.TopKCapacity));
    });

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

/// <summary>Where a model's load time went, for <c>--verbose</c> (the device's own creation is <see cref="ComputeDevice.CreationTime"/>).</summary>
/// <param name="Plan">the memory plan and the longest context that fits</param>
/// <param name="Allocation">weights, KV cache and workspace buffers, the RoPE table</param>
/// <param name="Compilation">compiling every kernel specialisation the forward passes launch (recorded, not run)</param>
/// <param name="KernelsCompiled">how many specialisations that was</param>
/// <param name="Files">opening and validating the weight files and reading the configuration</param>
/// <param name="Weights">converting and uploading the weights</param>
public readonly record struct LoadTimings(TimeSpan Plan, TimeSpan Allocation, TimeSpan Compilation, int KernelsCompiled, TimeSpan Files, TimeSpan Weights);
