using System.Buffers;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Engine;

/// <summary>
/// One weight tensor on the device, in its format's layout, named by its safetensors key: 16-bit
/// values in one buffer, or a block format's quants (named by the key) and scales (key + ".scales").
/// </summary>
public sealed class DeviceWeight : IDisposable
{
    internal DeviceWeight(string name, WeightFormat format, long[] shape, DeviceBuffer<ushort>? values, DeviceBuffer<byte>? quants, DeviceBuffer<ushort>? scales)
    {
        Name = name;
        Format = format;
        Shape = shape;
        Values = values;
        Quants = quants;
        Scales = scales;
    }

    /// <summary>The safetensors key (model.layers.3.mlp.up_proj.weight).</summary>
    public string Name { get; }

    /// <summary>How the values are laid out on the device.</summary>
    public WeightFormat Format { get; }

    /// <summary>[out, in] for a matrix, [n] for a norm weight.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>The 16-bit values (16-bit formats).</summary>
    public DeviceBuffer<ushort>? Values { get; }

    /// <summary>The quants (block formats).</summary>
    public DeviceBuffer<byte>? Quants { get; }

    /// <summary>The block scales (block formats).</summary>
    public DeviceBuffer<ushort>? Scales { get; }

    /// <summary>True for a second name of another weight's storage (a tied lm_head).</summary>
    public bool IsAlias => (Values?.IsAlias ?? false) || (Quants?.IsAlias ?? false);

    /// <summary>Values of the tensor.</summary>
    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>The weight as the matrix launchers take it.</summary>
    public WeightMatrix Matrix => Shape.Count != 2
        ? throw new InvalidOperationException($"{Name} is not a matrix")
        : Format is BlockQuantFormat q
            ? WeightMatrix.Quantized(q, Quants!.View, Scales!.View, (int)Shape[0], (int)Shape[1])
            : WeightMatrix.Of((SixteenBitFormat)Format, Values!.View, (int)Shape[0], (int)Shape[1]);

    /// <summary>The weight as the norm launchers take it.</summary>
    public WeightVector Vector => Shape.Count == 1 && Format is SixteenBitFormat f
        ? new WeightVector(f, Values!.View)
        : throw new InvalidOperationException($"{Name} is not a 16-bit vector");

    /// <inheritdoc/>
    public void Dispose()
    {
        Values?.Dispose();
        Quants?.Dispose();
        Scales?.Dispose();
    }
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
/// All model weights on the device, one buffer (16-bit) or one quants and one scales buffer (block
/// formats) per safetensors tensor, named by its key and allocated through the tracking allocator:
/// matrices in the model's <see cref="WeightFormat"/>, norm weights in its vector format. A tied
/// lm_head is an alias of the embedding (0 B).
/// </summary>
public sealed partial class ModelWeights : IDisposable
{
    /// <summary>Source elements converted per work item of an upload (8 MB of 16-bit output): big enough to amortise a copy, small enough to parallelise.</summary>
    const long UploadChunkElements = 4 << 20;

    /// <summary>Conversion threads of an upload (the copy to the device serialises anyway).</summary>
    const int MaxUploadThreads = 8;

    readonly Dictionary<string, DeviceWeight> byName;

    ModelWeights(LlamaConfig config, WeightLayout layout, Dictionary<string, DeviceWeight> byName)
    {
        this.byName = byName;
        Layout = layout;
        Format = layout.Main;
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

    /// <summary>Format of the matrices (the main one of a mix).</summary>
    public WeightFormat Format { get; }

    /// <summary>The format of every matrix.</summary>
    public WeightLayout Layout { get; }

    /// <summary>model.embed_tokens.weight [vocab, hidden].</summary>
    public DeviceWeight Embedding { get; }

    /// <summary>model.norm.weight [hidden].</summary>
    public DeviceWeight FinalNorm { get; }

    /// <summary>lm_head.weight [vocab, hidden] (the embedding when tied).</summary>
    public DeviceWeight LmHead { get; }

    /// <summary>Per-layer weights.</summary>
    public IReadOnlyList<LayerWeights> Layers { get; }

    /// <summary>Every weight, tied aliases included.</summary>
    public IEnumerable<DeviceWeight> All => byName.Values;

    /// <summary>
    /// Checks that every matrix of <paramref name="config"/> can be stored in its format of <paramref name="layout"/>
    /// (a block format needs input lengths that are whole blocks), before anything is allocated.
    /// </summary>
    public static void CheckFormat(LlamaConfig config, WeightLayout layout)
    {
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var format = layout.For(name);
            if (shape.Length == 2 && shape[1] % format.BlockSize != 0)
                throw new EngineArgumentException(
                    $"tensor '{name}' [{shape[0]}, {shape[1]}] has {shape[1]} inputs per row, not a multiple of {format.BlockSize}, so it cannot be stored as {format.Name}; " +
                    $"load the model with {EngineParameters.WeightFormat} fp16 or bf16", EngineParameter.WeightFormat);
        }
    }

    /// <summary>Allocates every weight buffer of <paramref name="config"/> each in its format of <paramref name="layout"/> (contents undefined).</summary>
    public static ModelWeights Allocate(DeviceAllocator allocator, LlamaConfig config, WeightLayout layout)
    {
        CheckFormat(config, layout);
        var byName = new Dictionary<string, DeviceWeight>();
        try
        {
            foreach (var (name, shape) in config.ExpectedTensors())
            {
                var f = shape.Length == 2 ? layout.For(name) : layout.Main.VectorFormat;
                byName[name] = f is BlockQuantFormat q
                    ? new DeviceWeight(name, q, shape, null,
                        allocator.Allocate<byte>(name, MemoryCategory.Weights, shape[0], q.RowQuantBytes(shape[1])),
                        allocator.Allocate<ushort>(name + BlockQuantFormat.ScalesSuffix, MemoryCategory.Weights, shape[0], q.RowSideWords(shape[1])))
                    : new DeviceWeight(name, f, shape, allocator.Allocate<ushort>(name, MemoryCategory.Weights, shape), null, null);
            }
            if (config.TieWordEmbeddings)
            {
                var e = byName["model.embed_tokens.weight"];
                string lm = LlamaConfig.LmHeadName;
                byName[lm] = new DeviceWeight(lm, e.Format, [.. e.Shape],
                    e.Values is { } v ? allocator.Alias(lm, v) : null,
                    e.Quants is { } qb ? allocator.Alias(lm, qb) : null,
                    e.Scales is { } sb ? allocator.Alias(lm + BlockQuantFormat.ScalesSuffix, sb) : null);
            }
            return new ModelWeights(config, layout, byName);
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
    /// Converts and uploads every tensor from a checkpoint: chunks of rows are converted in parallel
    /// on the CPU (BF16/F16/F32 to each weight's device format: rounded to 16 bits, or quantised
    /// block by block) into pooled buffers and copied to the device, so the model is never held twice
    /// in host memory. Every source value is checked to be finite on the way; a NaN or infinity is
    /// an error naming the tensor (the caller disposes the half-loaded model).
    /// </summary>
    /// <returns>conversion statistics (values that overflowed fp16, flushed to zero or became subnormal)</returns>
    public ConversionStats Upload(SafetensorsModel source, Accelerator accelerator, IProgress<UploadProgress>? progress = null)
    {
        var work = new List<UploadItem>();
        long totalBytes = 0;
        foreach (var w in Stored)
        {
            var t = source.GetTensor(w.Name);
            if (w.Format is BlockQuantFormat q && t.DType is SafetensorsDType.I8 or SafetensorsDType.U8)
            {
                // A quantised checkpoint (ilgpu-llama quantize): its quants and scales are the device planes.
                var scales = source.GetTensor(w.Name + BlockQuantFormat.ScalesSuffix);
                totalBytes += t.ByteLength + scales.ByteLength;
                long rowBytes = q.RowQuantBytes(w.Shape[1]);
                long rowsPerItem = Math.Max(1, UploadChunkElements / rowBytes);
                for (long r = 0; r < w.Shape[0]; r += rowsPerItem)
                    work.Add(new(w, t, scales, r, (int)Math.Min(rowsPerItem, w.Shape[0] - r)));
                continue;
            }
            totalBytes += t.ByteLength;
            // Whole rows per work item, so a block format quantises complete blocks.
            long rowLength = w.Shape[^1];
            long step = Math.Max(1, UploadChunkElements / rowLength) * rowLength;
            for (long o = 0; o < t.ElementCount; o += step)
                work.Add(new(w, t, null, o, (int)Math.Min(step, t.ElementCount - o)));
        }
        object deviceLock = new();
        object statsLock = new();
        var stats = default(ConversionStats);
        long done = 0;
        try
        {
            Parallel.ForEach(work, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Math.Min(MaxUploadThreads, Environment.ProcessorCount)) }, item =>
            {
                if (item.Scales is { } scaleTensor)
                {
                    long bytes = CopyStored(item.Weight, (BlockQuantFormat)item.Weight.Format, source, item.Tensor, scaleTensor, item.Offset, item.Count, deviceLock);
                    progress?.Report(new UploadProgress(Interlocked.Add(ref done, bytes), totalBytes));
                    return;
                }
                int srcSize = SafetensorsDTypes.SizeOf(item.Tensor.DType);
                var src = source.GetSpan(item.Tensor, item.Offset * srcSize, item.Count * srcSize);
                long bad = DTypeConversion.FirstNonFinite(src, item.Tensor.DType);
                if (bad >= 0)
                    throw new SafetensorsException(
                        $"tensor '{item.Weight.Name}' holds a NaN or infinite value (element {item.Offset + bad:N0}); the checkpoint is corrupt: download or export it again");
                var s = item.Weight.Format is BlockQuantFormat q
                    ? UploadQuantized(item.Weight, q, src, item.Tensor.DType, item.Offset, item.Count, deviceLock)
                    : Upload16(item.Weight, src, item.Tensor.DType, item.Offset, item.Count, deviceLock);
                lock (statsLock)
                    stats += s;
                long now = Interlocked.Add(ref done, (long)item.Count * srcSize);
                progress?.Report(new UploadProgress(now, totalBytes));
            });
        }
        catch (AggregateException e)
        {
            // Several chunks may fail at once (a corrupt tensor spans chunks): report the first.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        accelerator.Synchronize();
        return stats;
    }

    /// <summary>
    /// One work item of an upload: <see cref="Count"/> source values from element <see cref="Offset"/>,
    /// or, for a quantised checkpoint (<see cref="Scales"/> set), <see cref="Count"/> rows from row <see cref="Offset"/>.
    /// </summary>
    readonly record struct UploadItem(DeviceWeight Weight, TensorInfo Tensor, TensorInfo? Scales, long Offset, int Count);

    /// <summary>
    /// Copies rows of a quantised checkpoint's quants and scales to the device as they are (the file
    /// layout is the device layout), after checking that every scale is a finite fp16 value.
    /// </summary>
    /// <returns>source bytes copied</returns>
    static long CopyStored(DeviceWeight w, BlockQuantFormat q, SafetensorsModel source, TensorInfo quantTensor, TensorInfo scaleTensor,
        long firstRow, int rows, object deviceLock)
    {
        long rowBytes = q.RowQuantBytes(w.Shape[1]), words = q.RowSideWords(w.Shape[1]);
        var quants = source.GetSpan(quantTensor, firstRow * rowBytes, checked((int)(rows * rowBytes)));
        var scales = MemoryMarshal.Cast<byte, ushort>(source.GetSpan(scaleTensor, firstRow * words * 2, checked((int)(rows * words * 2))));
        int bad = q.FirstNonFiniteBlock(scales);
        if (bad >= 0)
            throw new SafetensorsException(
                $"tensor '{scaleTensor.Name}' holds a NaN or infinite scale (block {firstRow * (words / q.SideWords) + bad:N0}); the quantized checkpoint is corrupt: quantize the original model again");
        lock (deviceLock)
        {
            HostCopy.Upload(w.Quants!.View.SubView(firstRow * rowBytes, rows * rowBytes), quants);
            HostCopy.Upload(w.Scales!.View.SubView(firstRow * words, rows * words), scales);
        }
        return rows * (rowBytes + words * 2);
    }

    static ConversionStats Upload16(DeviceWeight w, ReadOnlySpan<byte> src, SafetensorsDType dtype, long offset, int count, object deviceLock)
    {
        var chunk = ArrayPool<ushort>.Shared.Rent(count);
        try
        {
            var s = DTypeConversion.Convert(src, dtype, chunk.AsSpan(0, count), (SixteenBitFormat)w.Format);
            lock (deviceLock)
                HostCopy.Upload(w.Values!.View.SubView(offset, count), chunk.AsSpan(0, count));
            return s;
        }
        finally
        {
            ArrayPool<ushort>.Shared.Return(chunk);
        }
    }

    static ConversionStats UploadQuantized(DeviceWeight w, BlockQuantFormat q, ReadOnlySpan<byte> src, SafetensorsDType dtype, long offset, int count, object deviceLock)
    {
        long cols = w.Shape[1];
        long firstRow = offset / cols;
        int rows = (int)(count / cols);
        int rowBytes = (int)q.RowQuantBytes(cols), blocks = (int)q.RowSideWords(cols);
        var values = ArrayPool<float>.Shared.Rent(count);
        var quants = ArrayPool<byte>.Shared.Rent(rows * rowBytes);
        var scales = ArrayPool<ushort>.Shared.Rent(rows * blocks);
        try
        {
            BlockQuantizer.QuantizeRows(q, w.Name, src, dtype, (int)cols, rows, values, quants, scales);
            lock (deviceLock)
            {
                HostCopy.Upload(w.Quants!.View.SubView(firstRow * rowBytes, (long)rows * rowBytes), quants.AsSpan(0, rows * rowBytes));
                HostCopy.Upload(w.Scales!.View.SubView(firstRow * blocks, (long)rows * blocks), scales.AsSpan(0, rows * blocks));
            }
            return default;
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
            ArrayPool<byte>.Shared.Return(quants);
            ArrayPool<ushort>.Shared.Return(scales);
        }
    }

    /// <summary>
    /// Fills every weight with deterministic pseudo-random values (for presets and benchmarks):
    /// uniform in [-scale, scale] for matrices, 1 +- scale/4 for norm weights, so activations stay
    /// in range through the layers. Block formats quantise the same values row by row.
    /// </summary>
    public void FillRandom(ulong seed, float scale, Accelerator accelerator)
    {
        const int chunk = 1 << 20;
        var noise = new DeterministicNoise(seed);
        foreach (var w in Stored.OrderBy(w => w.Name, StringComparer.Ordinal))
        {
            bool norm = w.Shape.Count == 1;
            if (w.Format is BlockQuantFormat q)
            {
                int cols = (int)w.Shape[1], rowBytes = (int)q.RowQuantBytes(cols), blocks = (int)q.RowSideWords(cols);
                var row = new float[cols];
                var rowQuants = new byte[rowBytes];
                var rowScales = new ushort[blocks];
                for (long r = 0; r < w.Shape[0]; r++)
                {
                    for (int i = 0; i < cols; i++)
                        row[i] = (float)(noise.NextSymmetric() * scale);
                    q.QuantizeRow(row, rowQuants, rowScales);
                    HostCopy.Upload(w.Quants!.View.SubView(r * rowBytes, rowBytes), rowQuants);
                    HostCopy.Upload(w.Scales!.View.SubView(r * blocks, blocks), rowScales);
                }
                continue;
            }
            var format = (SixteenBitFormat)w.Format;
            var buffer = w.Values!;
            var host = new ushort[chunk];
            for (long o = 0; o < buffer.Length; o += chunk)
            {
                int n = (int)Math.Min(chunk, buffer.Length - o);
                for (int i = 0; i < n; i++)
                {
                    double u = noise.NextSymmetric();
                    host[i] = format.Encode(norm ? 1 + u * scale / 4 : u * scale);
                }
                HostCopy.Upload(buffer.View.SubView(o, n), host.AsSpan(0, n));
            }
        }
        accelerator.Synchronize();
    }

    /// <summary>Zero-fills every weight (memory-only runs).</summary>
    public void Zero(Accelerator accelerator)
    {
        foreach (var w in Stored)
        {
            w.Values?.View.MemSetToZero();
            w.Quants?.View.MemSetToZero();
            w.Scales?.View.MemSetToZero();
        }
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
