using System.Buffers;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Engine;

/// <summary>One transformer block's weights on the device (16-bit, row-major [out, in]).</summary>
public sealed record LayerWeights(
    DeviceBuffer<ushort> InputNorm,
    DeviceBuffer<ushort> Q,
    DeviceBuffer<ushort> K,
    DeviceBuffer<ushort> V,
    DeviceBuffer<ushort> O,
    DeviceBuffer<ushort> PostAttentionNorm,
    DeviceBuffer<ushort> Gate,
    DeviceBuffer<ushort> Up,
    DeviceBuffer<ushort> Down);

/// <summary>Progress of a weight upload in bytes of source data.</summary>
public readonly record struct UploadProgress(long DoneBytes, long TotalBytes);

/// <summary>
/// All model weights on the device, one buffer per safetensors tensor, named by its key and
/// allocated through the tracking allocator. A tied lm_head is an alias of the embedding (0 B).
/// </summary>
public sealed class ModelWeights : IDisposable
{
    readonly Dictionary<string, DeviceBuffer<ushort>> byName;

    ModelWeights(LlamaConfig config, Dictionary<string, DeviceBuffer<ushort>> byName, DeviceBuffer<ushort> lmHead)
    {
        this.byName = byName;
        Embedding = byName["model.embed_tokens.weight"];
        FinalNorm = byName["model.norm.weight"];
        LmHead = lmHead;
        Layers = Enumerable.Range(0, config.NumHiddenLayers).Select(l =>
        {
            string p = $"model.layers.{l}.";
            return new LayerWeights(
                byName[p + "input_layernorm.weight"], byName[p + "self_attn.q_proj.weight"], byName[p + "self_attn.k_proj.weight"],
                byName[p + "self_attn.v_proj.weight"], byName[p + "self_attn.o_proj.weight"], byName[p + "post_attention_layernorm.weight"],
                byName[p + "mlp.gate_proj.weight"], byName[p + "mlp.up_proj.weight"], byName[p + "mlp.down_proj.weight"]);
        }).ToArray();
    }

    /// <summary>model.embed_tokens.weight [vocab, hidden].</summary>
    public DeviceBuffer<ushort> Embedding { get; }

    /// <summary>model.norm.weight [hidden].</summary>
    public DeviceBuffer<ushort> FinalNorm { get; }

    /// <summary>lm_head.weight [vocab, hidden] (the embedding when tied).</summary>
    public DeviceBuffer<ushort> LmHead { get; }

    /// <summary>Per-layer weights.</summary>
    public IReadOnlyList<LayerWeights> Layers { get; }

    /// <summary>Allocates every weight buffer of <paramref name="config"/> (contents undefined).</summary>
    public static ModelWeights Allocate(DeviceAllocator allocator, LlamaConfig config)
    {
        var byName = new Dictionary<string, DeviceBuffer<ushort>>();
        try
        {
            foreach (var (name, shape) in config.ExpectedTensors())
                byName[name] = allocator.Allocate<ushort>(name, MemoryCategory.Weights, shape);
            var lmHead = config.TieWordEmbeddings
                ? allocator.Alias(LlamaConfig.LmHeadName, byName["model.embed_tokens.weight"])
                : byName[LlamaConfig.LmHeadName];
            if (config.TieWordEmbeddings)
                byName[LlamaConfig.LmHeadName] = lmHead;
            return new ModelWeights(config, byName, lmHead);
        }
        catch
        {
            foreach (var b in byName.Values)
                b.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Converts and uploads every tensor from a checkpoint: chunks of a few MB are converted in
    /// parallel on the CPU (BF16/F16/F32 to the device's 16-bit type) into pooled buffers and
    /// copied to the device, so the model is never held twice in host memory.
    /// </summary>
    /// <returns>conversion statistics (values that overflowed fp16 or flushed to zero)</returns>
    public ConversionStats Upload(SafetensorsModel source, WeightStorage storage, Accelerator accelerator, IProgress<UploadProgress>? progress = null)
    {
        const long chunkElements = 4 << 20;
        var work = new List<(DeviceBuffer<ushort> Buffer, TensorInfo Tensor, long Offset, int Count)>();
        long totalBytes = 0;
        foreach (var (name, buffer) in byName)
        {
            if (buffer.IsAlias)
                continue;
            var t = source.GetTensor(name);
            totalBytes += t.ByteLength;
            for (long o = 0; o < t.ElementCount; o += chunkElements)
                work.Add((buffer, t, o, (int)Math.Min(chunkElements, t.ElementCount - o)));
        }
        object deviceLock = new();
        object statsLock = new();
        var stats = new ConversionStats(0, 0, 0);
        long done = 0;
        Parallel.ForEach(work, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Math.Min(8, Environment.ProcessorCount)) }, item =>
        {
            int srcSize = SafetensorsDTypes.SizeOf(item.Tensor.DType);
            var chunk = ArrayPool<ushort>.Shared.Rent(item.Count);
            try
            {
                var src = source.GetSpan(item.Tensor, item.Offset * srcSize, item.Count * srcSize);
                var s = DTypeConversion.Convert(src, item.Tensor.DType, chunk.AsSpan(0, item.Count), storage);
                lock (deviceLock)
                    item.Buffer.View.SubView(item.Offset, item.Count).CopyFromCPU(ref MemoryMarshal.GetArrayDataReference(chunk), item.Count);
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
    public void FillRandom(ulong seed, float scale, WeightStorage storage, Accelerator accelerator)
    {
        const int chunk = 1 << 20;
        var host = new ushort[chunk];
        ulong state = seed;
        foreach (var (name, buffer) in byName.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (buffer.IsAlias)
                continue;
            bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
            for (long o = 0; o < buffer.Length; o += chunk)
            {
                int n = (int)Math.Min(chunk, buffer.Length - o);
                for (int i = 0; i < n; i++)
                {
                    state = state * 6364136223846793005UL + 1442695040888963407UL;
                    double u = ((state >> 11) * (1.0 / (1UL << 53))) * 2 - 1;
                    double v = norm ? 1 + u * scale / 4 : u * scale;
                    host[i] = Kernels.Reference.KernelReference.Narrow(v, storage);
                }
                buffer.View.SubView(o, n).CopyFromCPU(ref host[0], n);
            }
        }
        accelerator.Synchronize();
    }

    /// <summary>Zero-fills every weight (memory-only runs).</summary>
    public void Zero(Accelerator accelerator)
    {
        foreach (var b in byName.Values.Where(b => !b.IsAlias))
            b.View.MemSetToZero();
        accelerator.Synchronize();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var b in byName.Values.Where(b => b.IsAlias))
            b.Dispose();
        foreach (var b in byName.Values.Where(b => !b.IsAlias))
            b.Dispose();
    }
}
