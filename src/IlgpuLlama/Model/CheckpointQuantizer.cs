using System.Buffers;
using System.Runtime.InteropServices;
using IlgpuLlama.Kernels;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Model;

/// <summary>What ilgpu-llama quantize (<see cref="CheckpointQuantizer"/>) wrote.</summary>
/// <param name="Directory">The new model directory.</param>
/// <param name="Format">The block format of its matrices.</param>
/// <param name="Files">Its files, by name.</param>
/// <param name="SourceBytes">Bytes of tensor data read from the source checkpoint.</param>
/// <param name="WeightBytes">Bytes of tensor data written (equal to the memory formula of the format).</param>
/// <param name="Warnings">Notes about the source (tensors it holds that the model does not use).</param>
public sealed record QuantizeResult(string Directory, BlockQuantFormat Format, IReadOnlyList<string> Files, long SourceBytes, long WeightBytes, IReadOnlyList<string> Warnings)
{
    /// <summary>The K-quant mix written (then <see cref="Format"/> is its main format), or null for one format.</summary>
    public WeightMix? Mix { get; init; }

    /// <summary>The format or mix name, as config.json's quantization.format has it.</summary>
    public string Name => Mix?.Name ?? Format.Name;
}

/// <summary>
/// Quantises a Hugging Face Llama checkpoint into a model directory that loads without quantising
/// again: every matrix as its block format's quants (I8 [rows, in] for Q8_0, U8 [rows, in / 2] for
/// Q4_0, the device layout) and "name.scales" (F16 [rows, in / 32]), the norms as F16, config.json
/// with a "quantization" entry, the tokenizer and other small files copied. Rows are converted and
/// quantised in parallel chunks written straight to their place in the file, so neither model is
/// ever held whole in memory; everything goes to a temporary directory beside the output that is
/// renamed into place at the end and removed on any failure or cancellation.
/// </summary>
public static class CheckpointQuantizer
{
    /// <summary>Data bytes per shard file (Hugging Face's default is 5 GB; a 4 GiB shard keeps 8B to three files).</summary>
    public const long DefaultShardBytes = 4L << 30;

    /// <summary>Source bytes per work item.</summary>
    const long ChunkBytes = 8 << 20;

    /// <summary>Files of a checkpoint that are weights and are not copied (they are what is being replaced).</summary>
    static readonly string[] WeightExtensions = [".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx"];

    /// <summary>Writes <paramref name="outDir"/> (which must not exist) from the checkpoint in <paramref name="modelDir"/>.</summary>
    /// <exception cref="EngineArgumentException">A missing source, an existing output, an already quantised source, or rows that are not whole blocks.</exception>
    /// <exception cref="ModelConfigException">The source's config or weights do not describe a loadable model.</exception>
    /// <exception cref="SafetensorsException">A NaN or infinite value, or a scale beyond fp16, in the source.</exception>
    public static QuantizeResult Quantize(string modelDir, BlockQuantFormat format, string outDir, IProgress<(long Done, long Total)>? progress = null,
        CancellationToken cancellation = default, long maxShardBytes = DefaultShardBytes) =>
        Quantize(modelDir, format, null, outDir, progress, cancellation, maxShardBytes);

    /// <summary>As the format overload, every matrix in the format <paramref name="mix"/> gives it (llama.cpp's q4_k_m, q5_k_m).</summary>
    public static QuantizeResult Quantize(string modelDir, WeightMix mix, string outDir, IProgress<(long Done, long Total)>? progress = null,
        CancellationToken cancellation = default, long maxShardBytes = DefaultShardBytes) =>
        Quantize(modelDir, (mix ?? throw new ArgumentNullException(nameof(mix))).Main, mix, outDir, progress, cancellation, maxShardBytes);

    static QuantizeResult Quantize(string modelDir, BlockQuantFormat format, WeightMix? mix, string outDir, IProgress<(long Done, long Total)>? progress,
        CancellationToken cancellation, long maxShardBytes)
    {
        ArgumentNullException.ThrowIfNull(format);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        if (string.IsNullOrWhiteSpace(modelDir) || !System.IO.Directory.Exists(modelDir))
            throw new EngineArgumentException($"{EngineParameters.Model} '{modelDir}' is not a directory; give the Hugging Face Llama 3 model directory to quantize", EngineParameter.Model);
        if (string.IsNullOrWhiteSpace(outDir))
            throw new EngineArgumentException($"{EngineParameters.OutputDirectory} is empty; give the directory to create, e.g. weights/Llama-3.2-1B-{format.Name}", EngineParameter.OutputDirectory);
        string target = Path.GetFullPath(outDir);
        if (System.IO.Directory.Exists(target) || File.Exists(target) || IsLink(target))
            throw new EngineArgumentException($"{EngineParameters.OutputDirectory} '{outDir}' already exists; give a new directory (nothing was written)", EngineParameter.OutputDirectory);
        string parent = Path.GetDirectoryName(target)!;
        if (!System.IO.Directory.Exists(parent))
            throw new EngineArgumentException($"{EngineParameters.OutputDirectory} '{outDir}': its parent directory '{parent}' does not exist; create it first", EngineParameter.OutputDirectory);
        if (Path.GetFullPath(modelDir).TrimEnd(Path.DirectorySeparatorChar) == target.TrimEnd(Path.DirectorySeparatorChar))
            throw new EngineArgumentException($"{EngineParameters.OutputDirectory} is the model directory itself; give a new directory", EngineParameter.OutputDirectory);

        var config = LlamaConfig.FromDirectory(modelDir);
        if (config.Quantization is { } already)
            throw new EngineArgumentException($"{EngineParameters.Model} '{modelDir}' is already quantized ({config.QuantizationMix?.Name ?? already.Name}); quantize the original BF16/F16/F32 checkpoint instead", EngineParameter.Model);
        var quantized = config with { Quantization = format, QuantizationMix = mix, TorchDtype = "float16" };
        var layout = quantized.StoredLayout!;
        // The weights first: a config that does not match them (num_hidden_layers 1000000 against 2 layers) is
        // refused at once, before the per-tensor checks list millions of tensors.
        using var source = SafetensorsModel.Open(modelDir);
        var warnings = LlamaConfig.ValidateWeights(config, source.Tensors, modelDir);
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var f = layout.For(name);
            if (shape.Length == 2 && shape[1] % f.BlockSize != 0)
                throw new EngineArgumentException(
                    $"tensor '{name}' [{shape[0]}, {shape[1]}] has {shape[1]} inputs per row, not a multiple of {f.BlockSize}, so this model cannot be stored as {f.Name}; run it in fp16 or bf16",
                    EngineParameter.WeightFormat);
        }
        var shards = PlanShards(quantized, maxShardBytes);

        // Temporaries of quantize runs killed outright (SIGKILL, power loss) are removed by the next run beside them.
        IO.TemporaryPaths.RemoveStale(parent, StaleTemporary);
        string temp = Path.Combine(parent, $".{Path.GetFileName(target)}.tmp-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
        var seam = TestSeam.FromEnvironment();
        bool done = false;
        // Registered, so a signal that ends the process (SIGTERM, SIGHUP) deletes it: it was not, and was left behind.
        using var registration = IO.TemporaryPaths.Register(temp);
        try
        {
            IO.TemporaryPaths.CreateDirectory(temp);
            long total = config.ExpectedTensors().Sum(t => source.GetTensor(t.Name).ByteLength), read = 0;
            var files = new List<string>();
            var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                string name = shards.Count == 1 ? SafetensorsModel.SingleFileName : $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                WriteShard(Path.Combine(temp, name), shards[i], layout, source, cancellation, bytes => progress?.Report((Interlocked.Add(ref read, bytes), total)), seam);
                files.Add(name);
                foreach (var t in shards[i])
                    weightMap[t.Name] = name;
            }
            if (shards.Count > 1)
            {
                File.WriteAllBytes(Path.Combine(temp, SafetensorsModel.IndexFileName), SafetensorsWriter.Index(weightMap, shards.Sum(s => s.Sum(t => t.Bytes))));
                files.Add(SafetensorsModel.IndexFileName);
            }
            File.WriteAllText(Path.Combine(temp, "config.json"), quantized.ToJson());
            files.Add("config.json");
            foreach (string file in System.IO.Directory.EnumerateFiles(modelDir).Order(StringComparer.Ordinal))
            {
                string fileName = Path.GetFileName(file);
                if (fileName == "config.json" || fileName == SafetensorsModel.IndexFileName || fileName.StartsWith('.') ||
                    WeightExtensions.Any(e => fileName.EndsWith(e, StringComparison.OrdinalIgnoreCase)))
                    continue;
                File.Copy(file, Path.Combine(temp, fileName));
                files.Add(fileName);
            }
            cancellation.ThrowIfCancellationRequested();
            System.IO.Directory.Move(temp, target);
            done = true;
            return new QuantizeResult(target, format, files, total, shards.Sum(s => s.Sum(t => t.Bytes)), warnings) { Mix = mix };
        }
        catch (IOException e) when (!done && (System.IO.Directory.Exists(target) || File.Exists(target)))
        {
            throw new EngineArgumentException($"{EngineParameters.OutputDirectory} '{outDir}' appeared while quantizing; nothing was written to it", EngineParameter.OutputDirectory, e);
        }
        catch (IOException e) when (!done && IsDiskFull(e))
        {
            // The runtime's message names a file in the temporary directory, which is deleted below.
            throw new EngineStateException($"no space left on the device holding {outDir}; free space or choose another {EngineParameters.OutputDirectory} (nothing was written)", EngineParameter.OutputDirectory, e);
        }
        catch (IOException e) when (!done && e is not FileNotFoundException && e.Message.Contains(temp, StringComparison.Ordinal))
        {
            throw new EngineStateException($"cannot write {outDir} ({e.Message.Replace(temp, target, StringComparison.Ordinal).TrimEnd('.')}); check the free space and permissions there, or choose another {EngineParameters.OutputDirectory} (nothing was written)", EngineParameter.OutputDirectory, e);
        }
        finally
        {
            if (!done)
                IO.TemporaryPaths.Delete(temp);
        }
    }

    /// <summary>The temporary directory of a quantize run: <c>.NAME.tmp-PID-XXXXXXXX</c> (PID the process that wrote it).</summary>
    static readonly System.Text.RegularExpressions.Regex StaleTemporary = new(@"^\..+\.tmp-(?<pid>\d+)-[0-9a-f]{8}$", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    /// <summary>ENOSPC (errno 28, which .NET on Unix puts in HResult) or Windows' disk-full codes.</summary>
    public static bool IsDiskFull(IOException e) =>
        e.HResult == 28 || e.HResult == unchecked((int)0x80070070) || e.HResult == unchecked((int)0x80070027);

    /// <summary>
    /// Fault injection for the tests that run quantize as its own process: <c>ILGPU_LLAMA_QUANTIZE_TEST=slow</c>
    /// pauses 500 ms per chunk (so a signal can arrive mid-write), <c>enospc</c> fails the first chunk's write
    /// as a full disk does. Unset in normal use.
    /// </summary>
    sealed record TestSeam(bool Slow, bool DiskFull)
    {
        public static TestSeam FromEnvironment() => Environment.GetEnvironmentVariable("ILGPU_LLAMA_QUANTIZE_TEST") switch
        {
            "slow" => new(true, false),
            "enospc" => new(false, true),
            _ => new(false, false),
        };
    }

    static bool IsLink(string path) => new FileInfo(path).LinkTarget is not null;

    /// <summary>One tensor of the output: its key, dtype, shape, data bytes, and the source matrix or vector it comes from.</summary>
    sealed record Planned(string Name, SafetensorsDType DType, long[] Shape, long Bytes, string Source, bool IsScales);

    /// <summary>Every output tensor in checkpoint order (a matrix's quants, then its scales), cut into shards of at most <paramref name="maxShardBytes"/>, a matrix never split across two.</summary>
    static List<List<Planned>> PlanShards(LlamaConfig quantized, long maxShardBytes)
    {
        var stored = quantized.StoredTensors();
        var groups = new List<List<Planned>>();
        foreach (var (name, shape, dtypes) in stored)
        {
            bool scales = name.EndsWith(BlockQuantFormat.ScalesSuffix, StringComparison.Ordinal);
            long bytes = shape.Aggregate(1L, (a, d) => a * d) * dtypes[0].SizeOf();
            var planned = new Planned(name, dtypes[0], shape, bytes, scales ? name[..^BlockQuantFormat.ScalesSuffix.Length] : name, scales);
            if (scales)
                groups[^1].Add(planned);
            else
                groups.Add([planned]);
        }
        var shards = new List<List<Planned>> { new() };
        long size = 0;
        foreach (var group in groups)
        {
            long bytes = group.Sum(t => t.Bytes);
            if (shards[^1].Count > 0 && size + bytes > maxShardBytes)
            {
                shards.Add([]);
                size = 0;
            }
            shards[^1].AddRange(group);
            size += bytes;
        }
        return shards;
    }

    /// <summary>Writes one shard: its header, then each tensor's rows converted in parallel and written at their offsets.</summary>
    static void WriteShard(string path, List<Planned> tensors, WeightLayout layout, SafetensorsModel source, CancellationToken cancellation, Action<long> read, TestSeam seam)
    {
        byte[] header = SafetensorsWriter.Header(tensors.Select(t => (t.Name, t.DType, t.Shape, t.Bytes)).ToList());
        var offsets = new Dictionary<string, long>(StringComparer.Ordinal);
        long offset = header.Length;
        foreach (var t in tensors)
        {
            offsets[t.Name] = offset;
            offset += t.Bytes;
        }
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize: 0);
        stream.SetLength(offset);
        var handle = stream.SafeFileHandle;
        RandomAccess.Write(handle, header, 0);

        var work = new List<(Planned Tensor, TensorInfo Source, long FirstRow, int Rows)>();
        foreach (var t in tensors.Where(t => !t.IsScales))
        {
            var src = source.GetTensor(t.Source);
            long rows = src.Shape.Count == 2 ? src.Shape[0] : 1;
            long rowBytes = src.ByteLength / rows;
            long step = Math.Max(1, ChunkBytes / rowBytes);
            for (long r = 0; r < rows; r += step)
                work.Add((t, src, r, (int)Math.Min(step, rows - r)));
        }
        var options = new ParallelOptions { CancellationToken = cancellation, MaxDegreeOfParallelism = Math.Max(1, Math.Min(8, Environment.ProcessorCount)) };
        try
        {
            Parallel.ForEach(work, options, item =>
            {
                var (t, src, firstRow, rows) = item;
                if (seam.Slow)
                    Thread.Sleep(500);
                if (seam.DiskFull)
                    throw new IOException($"No space left on device : '{path}'", 28);
                int srcSize = src.DType.SizeOf();
                long cols = src.Shape[^1];
                var span = source.GetSpan(src, firstRow * cols * srcSize, checked((int)(rows * cols * srcSize)));
                long bad = DTypeConversion.FirstNonFinite(span, src.DType);
                if (bad >= 0)
                    throw new SafetensorsException($"tensor '{src.Name}' holds a NaN or infinite value (element {firstRow * cols + bad:N0}); the checkpoint is corrupt: download or export it again");
                if (src.Shape.Count == 1)
                {
                    var values = new ushort[cols];
                    var stats = DTypeConversion.Convert(span, src.DType, values, WeightFormat.Fp16);
                    if (stats.Overflows > 0)
                        throw new SafetensorsException($"tensor '{src.Name}' has {stats.Overflows} values beyond the fp16 range, which a quantized checkpoint stores its norms in; load the original checkpoint with {EngineParameters.WeightFormat} bf16 instead");
                    RandomAccess.Write(handle, MemoryMarshal.AsBytes(values.AsSpan()), offsets[t.Name]);
                }
                else
                {
                    var format = (BlockQuantFormat)layout.For(src.Name);
                    long rowQuant = format.RowQuantBytes(cols), blocks = format.RowSideWords(cols);
                    var quants = ArrayPool<byte>.Shared.Rent((int)(rows * rowQuant));
                    var scales = ArrayPool<ushort>.Shared.Rent((int)(rows * blocks));
                    var floats = ArrayPool<float>.Shared.Rent((int)(rows * cols));
                    try
                    {
                        BlockQuantizer.QuantizeRows(format, src.Name, span, src.DType, (int)cols, rows, floats, quants, scales);
                        RandomAccess.Write(handle, quants.AsSpan(0, (int)(rows * rowQuant)), offsets[t.Name] + firstRow * rowQuant);
                        RandomAccess.Write(handle, MemoryMarshal.AsBytes(scales.AsSpan(0, (int)(rows * blocks))), offsets[t.Name + BlockQuantFormat.ScalesSuffix] + firstRow * blocks * 2);
                    }
                    finally
                    {
                        ArrayPool<byte>.Shared.Return(quants);
                        ArrayPool<ushort>.Shared.Return(scales);
                        ArrayPool<float>.Shared.Return(floats);
                    }
                }
                read(span.Length);
            });
        }
        catch (AggregateException e)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        stream.Flush(flushToDisk: true);
    }
}

/// <summary>Quantisation of rows of checkpoint values, shared by the loader and <see cref="CheckpointQuantizer"/>.</summary>
public static class BlockQuantizer
{
    /// <summary>
    /// Converts <paramref name="rows"/> rows of <paramref name="cols"/> source values to fp32 (exactly)
    /// and quantises them into <paramref name="quants"/> and <paramref name="scales"/> (row-major).
    /// </summary>
    /// <exception cref="SafetensorsException">A block whose scale exceeds the fp16 range.</exception>
    public static void QuantizeRows(BlockQuantFormat q, string tensor, ReadOnlySpan<byte> src, SafetensorsDType dtype, int cols, int rows,
        Span<float> scratch, Span<byte> quants, Span<ushort> scales)
    {
        int rowBytes = (int)q.RowQuantBytes(cols), blocks = (int)q.RowSideWords(cols);
        var values = scratch[..(rows * cols)];
        DTypeConversion.ToF32(src, dtype, values);
        for (int r = 0; r < rows; r++)
            q.QuantizeRow(values.Slice(r * cols, cols), quants.Slice(r * rowBytes, rowBytes), scales.Slice(r * blocks, blocks));
        int overflow = 0;
        for (int r = 0; r < rows; r++)
        {
            var rowSide = scales.Slice(r * blocks, blocks);
            for (int b = 0; b < blocks / q.SideWords; b++)
                overflow += q.ScalesFinite(rowSide.Slice(b * q.SideWords, q.SideWords)) ? 0 : 1;
        }
        if (overflow > 0)
            throw new SafetensorsException(
                $"tensor '{tensor}' has {overflow} blocks whose {q.Name} scale exceeds the fp16 range (values beyond {65504f * q.LargestQuant:G3}); load the original checkpoint with {EngineParameters.WeightFormat} bf16 instead");
    }
}
