using IlgpuLlama.Device;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Model;

/// <summary>One line of the memory formula.</summary>
public sealed record MemoryLine(MemoryCategory Category, string Item, string Formula, long Bytes);

/// <summary>
/// The memory formula as code: what the engine must hold on the device for a model at a given
/// batch and context in a given weight format.
/// <para>weights = sum over the 2-D weights of rows x in / block x bytes per block, plus the 1-D
/// (norm) weights at 2 B each; for a 16-bit format that is parameters x 2 B (tied embeddings
/// counted once);</para>
/// <para>KV cache = batch x seq x (2 x layers x kv_heads x head_dim x 2 B (fp16) or 4 B (fp32)), in closed form;</para>
/// <para>activations = the sum of the <see cref="WorkspacePlan"/> buffers, itemised in <see cref="ActivationLines"/>.</para>
/// </summary>
public sealed class MemoryPlan
{
    /// <summary>Bytes per cached K or V element: 2 (fp16, the default) or 4 (fp32).</summary>
    public int BytesPerCacheElement => Shape.KvCache.Bytes();

    /// <summary>Computes the plan.</summary>
    public MemoryPlan(LlamaConfig config, WorkspaceShape shape, WeightLayout layout)
    {
        Config = config;
        Shape = shape;
        Layout = layout;
        Format = layout.Main;
        Workspace = new WorkspacePlan(config, shape);
        ParameterCount = config.ParameterCount();
        WeightBytes = layout.WeightBytes(config);
        KvBytesPerToken = 2L * config.NumHiddenLayers * config.KvDim * BytesPerCacheElement;
        KvCacheBytes = (long)shape.MaxBatch * shape.MaxSeq * KvBytesPerToken;
        ActivationLines = Workspace.Buffers.Where(b => b.Category == MemoryCategory.Activations)
            .GroupBy(b => b.Item)
            .Select(g => new MemoryLine(MemoryCategory.Activations, g.Key, LineFormula(g), g.Sum(b => b.Bytes)))
            .ToArray();
        ActivationBytes = ActivationLines.Sum(l => l.Bytes);
    }

    /// <summary>The model configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>Batch, context and kernel-dependent workspace sizes.</summary>
    public WorkspaceShape Shape { get; }

    /// <summary>Format of the weights on the device (the main one of a mix).</summary>
    public WeightFormat Format { get; }

    /// <summary>The format of every matrix (one format, or a GGUF file's mix).</summary>
    public WeightLayout Layout { get; }

    /// <summary>Weight bits per parameter on the device: the format's, or the mix's average (norms included).</summary>
    public double BitsPerWeight => Layout.IsMixed ? 8.0 * WeightBytes / ParameterCount : Format.BitsPerWeight;

    /// <summary>Every buffer of the workspace and KV cache.</summary>
    public WorkspacePlan Workspace { get; }

    /// <summary>Parameters, tied embeddings counted once.</summary>
    public long ParameterCount { get; }

    /// <summary>Device bytes of every weight in <see cref="Format"/>.</summary>
    public long WeightBytes { get; }

    /// <summary>2 (K and V) x layers x kv_heads x head_dim x <see cref="BytesPerCacheElement"/>.</summary>
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

    // "2 x T x hidden x 4 + B x 4": identical buffer formulas counted, the rest summed.
    static string LineFormula(IEnumerable<BufferSpec> buffers) => string.Join(" + ", buffers
        .GroupBy(b => b.Formula)
        .Select(g => g.Count() == 1 ? g.Key : $"{g.Count()} x {g.Key}"));
}
