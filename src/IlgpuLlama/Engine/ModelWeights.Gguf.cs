using System.Buffers;
using System.Runtime.InteropServices;
using ILGPU.Runtime;
using IlgpuLlama.Gguf;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Engine;

// Uploading a GGUF model: each tensor's rows are read in Hugging Face's order (undoing the q/k
// permutation of llama.cpp's converter), then stored in the device format: ggml blocks of the same
// format are split into the quants and scales planes as they are; F32/F16/BF16 convert as from a
// safetensors file; other block types (K-quants) are dequantised as ggml does and then converted.
public sealed partial class ModelWeights
{
    /// <summary>
    /// Converts and uploads every tensor of a GGUF model, chunks of rows in parallel. NaN or infinite
    /// values (or block scales) are errors naming the tensor.
    /// </summary>
    /// <returns>conversion statistics (values that overflowed fp16, flushed to zero or became subnormal)</returns>
    public ConversionStats Upload(GgufModel source, int headDim, Accelerator accelerator, IProgress<UploadProgress>? progress = null)
    {
        var work = new List<(DeviceWeight Weight, GgufTensor Tensor, long FirstRow, int Rows)>();
        long totalBytes = 0;
        foreach (var w in Stored)
        {
            var t = GgufLlama.Tensor(source, w.Name);
            totalBytes += t.ByteLength;
            long rows = w.Shape.Count == 2 ? w.Shape[0] : 1, cols = w.Shape[^1];
            long rowsPerItem = Math.Max(1, UploadChunkElements / cols);
            for (long r = 0; r < rows; r += rowsPerItem)
                work.Add((w, t, r, (int)Math.Min(rowsPerItem, rows - r)));
        }
        object deviceLock = new(), statsLock = new();
        var stats = default(ConversionStats);
        long done = 0;
        try
        {
            Parallel.ForEach(work, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Math.Min(MaxUploadThreads, Environment.ProcessorCount)) }, item =>
            {
                var s = UploadRows(source, item.Weight, item.Tensor, item.FirstRow, item.Rows, headDim, deviceLock);
                lock (statsLock)
                    stats += s;
                progress?.Report(new UploadProgress(Interlocked.Add(ref done, item.Rows * item.Tensor.RowBytes), totalBytes));
            });
        }
        catch (AggregateException e)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        accelerator.Synchronize();
        return stats;
    }

    static ConversionStats UploadRows(GgufModel source, DeviceWeight w, GgufTensor t, long firstRow, int rows, int headDim, object deviceLock)
    {
        int cols = (int)w.Shape[^1], rowBytes = checked((int)t.RowBytes);
        var plain = GgufRows.PlainType(t.Type);
        var values = ArrayPool<float>.Shared.Rent(cols);
        var stats = default(ConversionStats);
        try
        {
            ReadOnlySpan<byte> Row(int i) => source.GetSpan(t, GgufLlama.SourceRow(w.Name, firstRow + i, headDim) * rowBytes, rowBytes);

            // The row as bytes of a plain type: the file's own when it is F32/F16/BF16, else ggml's dequantised fp32 values.
            ReadOnlySpan<byte> Plain(int i, out SafetensorsDType dtype)
            {
                var raw = Row(i);
                dtype = plain ?? SafetensorsDType.F32;
                if (plain is null)
                {
                    GgufRows.Dequantize(t.Type, raw, values.AsSpan(0, cols));
                    raw = MemoryMarshal.AsBytes(values.AsSpan(0, cols));
                }
                long bad = DTypeConversion.FirstNonFinite(raw, dtype);
                if (bad >= 0)
                    throw new GgufException($"{t.FilePath}: tensor '{t.Name}' holds a NaN or infinite value (row {GgufLlama.SourceRow(w.Name, firstRow + i, headDim):N0}, value {bad:N0}); the file is corrupt — download it again");
                return raw;
            }

            if (w.Format is SixteenBitFormat sixteen)
            {
                var output = ArrayPool<ushort>.Shared.Rent(rows * cols);
                try
                {
                    for (int i = 0; i < rows; i++)
                    {
                        var bytes = Plain(i, out var dtype);
                        stats += DTypeConversion.Convert(bytes, dtype, output.AsSpan(i * cols, cols), sixteen);
                    }
                    lock (deviceLock)
                        HostCopy.Upload(w.Values!.View.SubView(firstRow * cols, (long)rows * cols), output.AsSpan(0, rows * cols));
                }
                finally
                {
                    ArrayPool<ushort>.Shared.Return(output);
                }
                return stats;
            }

            var q = (BlockQuantFormat)w.Format;
            int quantBytes = (int)q.RowQuantBytes(cols), blocks = (int)q.RowSideWords(cols);
            var quants = ArrayPool<byte>.Shared.Rent(rows * quantBytes);
            var scales = ArrayPool<ushort>.Shared.Rent(rows * blocks);
            var scratch = ArrayPool<float>.Shared.Rent(cols);
            try
            {
                for (int i = 0; i < rows; i++)
                {
                    var rowQuants = quants.AsSpan(i * quantBytes, quantBytes);
                    var rowScales = scales.AsSpan(i * blocks, blocks);
                    if (GgufRows.BlockType(q) == t.Type)
                    {
                        int bad = GgufRows.SplitBlocks(q, Row(i), rowQuants, rowScales);
                        if (bad >= 0)
                            throw new GgufException($"{t.FilePath}: tensor '{t.Name}' holds a NaN or infinite block scale (row {GgufLlama.SourceRow(w.Name, firstRow + i, headDim):N0}, block {bad:N0}); the file is corrupt — download it again");
                        continue;
                    }
                    var bytes = Plain(i, out var dtype);
                    BlockQuantizer.QuantizeRows(q, t.Name, bytes, dtype, cols, 1, scratch, rowQuants, rowScales);
                }
                lock (deviceLock)
                {
                    HostCopy.Upload(w.Quants!.View.SubView(firstRow * quantBytes, (long)rows * quantBytes), quants.AsSpan(0, rows * quantBytes));
                    HostCopy.Upload(w.Scales!.View.SubView(firstRow * blocks, (long)rows * blocks), scales.AsSpan(0, rows * blocks));
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(quants);
                ArrayPool<ushort>.Shared.Return(scales);
                ArrayPool<float>.Shared.Return(scratch);
            }
            return stats;
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
        }
    }
}
