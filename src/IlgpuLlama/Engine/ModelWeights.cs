using System.Buffers;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Engine;

/// <summary>One weight tensor on the device, in its format's layout, named by its safetensors key.</summary>
public sealed class DeviceWeight : IDisposable
{
    internal DeviceWeight(string name, WeightFormat format, long[] shape, DeviceBuffer<ushort> values)
    {
        Name = name;
        Format = format;
        Shape = shape;
        Values = values;
    }

    /// <summary>The safetensors key (model.layers.3.mlp.up_proj.weight).</summary>
    public string Name { get; }

    /// <summary>How the values are laid out on the device.</summary>
    public WeightFormat Format { get; }

    /// <summary>[out, in] for a matrix, [n] for a norm weight.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>The 16-bit values.</summary>
    public DeviceBuffer<ushort> Values { get; }

    /// <summary>True for a second name of another weight's storage (a tied lm_head).</summary>
    public bool IsAlias => Values.IsAlias;

    /// <summary>The weight as the matrix launchers take it.</summary>
    public WeightMatrix Matrix => Shape.Count == 2
        ? new WeightMatrix(Format, (int)Shape[0], (int)Shape[1], Values.View)
        : throw new InvalidOperationException($"{Name} is not a matrix");

    /// <summary>The weight as the norm launchers take it.</summary>
    public WeightVector Vector => Shape.Count == 1 && Format is SixteenBitFormat f
        ? new WeightVector(f, Values.View)
        : throw new InvalidOperationException($"{Name} is not a 16-bit vector");

    /// <inheritdoc/>
    public void Dispose() => Values.Dispose();
}

/// <summary>One transformer block's weights on the device (row-major [out, in]).</summary>
public sealed record LayerWeights(
    DeviceWeight InputNorm,
    DeviceWeight Q,
    DeviceWeight K,
    DeviceWeight V,
    DeviceWeight O,
    DeviceWeight PostAttentionNorm,
    DeviceWeight Gate,
    DeviceWeight Up,
    DeviceWeight Down)
{
    /// <summary>q, k and v as the fused projection takes them.</summary>
    public QkvWeights Qkv => new(Q.Matrix, K.Matrix, V.Matrix);
}

/// <summary>Progress of a weight upload in bytes of source data.</summary>
public readonly record struct UploadProgress(long DoneBytes, long TotalBytes);

/// <summary>
/// All model weights on the device, one buffer per safetensors tensor, named by its key and
/// allocated through the tracking allocator: matrices in the model's <see cref="WeightFormat"/>,
/// norm weights in its vector format. A tied lm_head is an alias of the embedding (0 B).
/// </summary>
public sealed class ModelWeights : IDisposable
{
    /// <summary>Source elements converted per work item of an upload (8 MB of 16-bit output): big enough to amortise a copy, small enough to parallelise.</summary>
    const long UploadChunkElements = 4 << 20;

    /// <summary>Conversion threads of an upload (the copy to the device serialises anyway).</summary>
    const int MaxUploadThreads = 8;

    readonly Dictionary<string, DeviceWeight> byName;

    ModelWeights(LlamaConfig config, WeightFormat format, Dictionary<string, DeviceWeight> byName)
    {
        this.byName = byName;
        Format = format;
        Embedding = byName["model.embed_tokens.weight"];
        FinalNorm = byName["model.norm.weight"];
        LmHead = byName[LlamaConfig.LmHeadName];
        Layers = Enumerable.Range(0, config.NumHiddenLayers).Select(l =>
        {
            string p = $"model.layers.{l}.";
            return new LayerWeights(
                byName[p + "input_layernorm.weight"], byName[p + "self_attn.q_proj.weight"], byName[p + "self_attn.k_proj.weight"],
                byName[p + "self_attn.v_proj.weight"], byName[p + "self_attn.o_proj.weight"], byName[p + "post_attention_layernorm.weight"],
                byName[p + "mlp.gate_proj.weight"], byName[p + "mlp.up_proj.weight"], byName[p + "mlp.down_proj.weight"]);
        }).ToArray();
    }

    /// <summary>Format of the matrices.</summary>
    public WeightFormat Format { get; }

    /// <summary>model.embed_tokens.weight [vocab, hidden].</summary>
    public DeviceWeight Embedding { get; }

    /// <summary>model.norm.weight [hidden].</summary>
    public DeviceWeight FinalNorm { get; }

    /// <summary>lm_head.weight [vocab, hidden] (the embedding when tied).</summary>
    public DeviceWeight LmHead { get; }

    /// <summary>Per-layer weights.</summary>
    public IReadOnlyList<LayerWeights> Layers { get; }

    /// <summary>Allocates every weight buffer of <paramref name="config"/> in <paramref name="format"/> (contents undefined).</summary>
    public static ModelWeights Allocate(DeviceAllocator allocator, LlamaConfig config, WeightFormat format)
    {
        if (format is not SixteenBitFormat)
            throw new EngineArgumentException($"{EngineParameters.WeightFormat} {format.Name} has no device upload yet", EngineParameter.WeightFormat);
        var byName = new Dictionary<string, DeviceWeight>();
        try
        {
            foreach (var (name, shape) in config.ExpectedTensors())
            {
                var f = shape.Length == 2 ? format : format.VectorFormat;
                byName[name] = new DeviceWeight(name, f, shape, allocator.Allocate<ushort>(name, MemoryCategory.Weights, shape));
            }
            if (config.TieWordEmbeddings)
            {
                var e = byName["model.embed_tokens.weight"];
                byName[LlamaConfig.LmHeadName] = new DeviceWeight(LlamaConfig.LmHeadName, e.Format, [.. e.Shape], allocator.Alias(LlamaConfig.LmHeadName, e.Values));
            }
            return new ModelWeights(config, format, byName);
        }
        catch
        {
            foreach (var w in byName.Values)
                w.Dispose();
            throw;
        }
    }

    IEnumerable<DeviceWeight> Stored => byName.Values.Where(w => !w.IsAlias);

    /// <summary>
    /// Converts and uploads every tensor from a checkpoint: chunks are converted in parallel on the
    /// CPU (BF16/F16/F32 to each weight's device format) into pooled buffers and copied to the
    /// device, so the model is never held twice in host memory.
    /// </summary>
    /// <returns>conversion statistics (values that overflowed fp16, flushed to zero or became subnormal)</returns>
    public ConversionStats Upload(SafetensorsModel source, Accelerator accelerator, IProgress<UploadProgress>? progress = null)
    {
        var work = new List<(DeviceWeight Weight, TensorInfo Tensor, long Offset, int Count)>();
        long totalBytes = 0;
        foreach (var w in Stored)
        {
            var t = source.GetTensor(w.Name);
            totalBytes += t.ByteLength;
            for (long o = 0; o < t.ElementCount; o += UploadChunkElements)
                work.Add((w, t, o, (int)Math.Min(UploadChunkElements, t.ElementCount - o)));
        }
        object deviceLock = new();
        object statsLock = new();
        var stats = default(ConversionStats);
        long done = 0;
        Parallel.ForEach(work, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Math.Min(MaxUploadThreads, Environment.ProcessorCount)) }, item =>
        {
            int srcSize = SafetensorsDTypes.SizeOf(item.Tensor.DType);
            var chunk = ArrayPool<ushort>.Shared.Rent(item.Count);
            try
            {
                var src = source.GetSpan(item.Tensor, item.Offset * srcSize, item.Count * srcSize);
                var s = DTypeConversion.Convert(src, item.Tensor.DType, chunk.AsSpan(0, item.Count), (SixteenBitFormat)item.Weight.Format);
                lock (deviceLock)
                    item.Weight.Values.View.SubView(item.Offset, item.Count).CopyFromCPU(ref MemoryMarshal.GetArrayDataReference(chunk), item.Count);
                lock (statsLock)
                    stats += s;
                long now = Interlocked.Add(ref done, (long)item.Count * srcSize);
                progress?.Report(new UploadProgress(now, totalBytes));
            }
            finally
            {
                ArrayPool<ushort>.Shared.Return(chunk);
            }
        });
        accelerator.Synchronize();
        return stats;
    }

    /// <summary>
    /// Fills every weight with deterministic pseudo-random values (for presets and benchmarks):
    /// uniform in [-scale, scale] for matrices, 1 +- scale/4 for norm weights, so activations stay
    /// in range through the layers.
    /// </summary>
    public void FillRandom(ulong seed, float scale, Accelerator accelerator)
    {
        const int chunk = 1 << 20;
        var host = new ushort[chunk];
        var noise = new DeterministicNoise(seed);
        foreach (var w in Stored.OrderBy(w => w.Name, StringComparer.Ordinal))
        {
            var format = (SixteenBitFormat)w.Format;
            bool norm = w.Shape.Count == 1;
            var buffer = w.Values;
            for (long o = 0; o < buffer.Length; o += chunk)
            {
                int n = (int)Math.Min(chunk, buffer.Length - o);
                for (int i = 0; i < n; i++)
                {
                    double u = noise.NextSymmetric();
                    host[i] = format.Encode(norm ? 1 + u * scale / 4 : u * scale);
                }
                buffer.View.SubView(o, n).CopyFromCPU(ref host[0], n);
            }
        }
        accelerator.Synchronize();
    }

    /// <summary>Zero-fills every weight (memory-only runs).</summary>
    public void Zero(Accelerator accelerator)
    {
        foreach (var w in Stored)
            w.Values.View.MemSetToZero();
        accelerator.Synchronize();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var w in byName.Values.Where(w => w.IsAlias))
            w.Dispose();
        foreach (var w in Stored)
            w.Dispose();
    }
}
