using System.Collections.ObjectModel;
using System.IO.MemoryMappedFiles;
using System.Text.Json;

namespace IlgpuLlama.Safetensors;

/// <summary>
/// One .safetensors file, validated in full on open and then memory-mapped read-only, so tensor
/// data is paged in from the OS cache on demand instead of being copied into managed memory.
/// </summary>
/// <remarks>
/// Validation follows the reference implementation with one deliberate relaxation: gaps between
/// tensors and bytes after the last tensor are allowed (some third-party writers align tensors),
/// because they cannot make any tensor read the wrong bytes. Overlaps, out-of-range offsets and
/// size/shape mismatches are rejected. Dtypes outside BF16/F16/F32 are accepted as metadata
/// (<see cref="SafetensorsDType.Other"/>); their sizes are checked when the safetensors spec defines
/// the dtype, and asking for their data throws.
/// Spans and pointers handed out are valid only until <see cref="Dispose"/>.
/// </remarks>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are treated as corruption rather than allocated; real ones are a few hundred KB.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private const string Redownload = "the file is corrupt — re-download it";

    private MemoryMappedFile? _map;
    private MemoryMappedViewAccessor? _view;
    private byte* _base;

    private SafetensorsFile(string path, long fileLength, long dataOffset,
        IReadOnlyDictionary<string, TensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        FilePath = path;
        FileLength = fileLength;
        DataOffset = dataOffset;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The path the file was opened with; also stored in every <see cref="TensorInfo.FilePath"/>.</summary>
    public string FilePath { get; }

    /// <summary>Total file size in bytes.</summary>
    public long FileLength { get; }

    /// <summary>Absolute offset of the data area (8 + header length).</summary>
    public long DataOffset { get; }

    /// <summary>All tensors by name, enumerated in file order (ascending offset).</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>The optional "__metadata__" string map; empty when absent.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens, validates and maps a safetensors file.</summary>
    /// <exception cref="SafetensorsException">The file is missing, unreadable or not a valid safetensors file.</exception>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        FileStream stream;
        IO.InputFile.Check(path);
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete,
                bufferSize: 1, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new SafetensorsException($"{path}: file not found");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SafetensorsException($"{path}: cannot open the file ({OneLine(e.Message)})", e);
        }

        SafetensorsFile? file = null;
        try
        {
            long length = stream.Length;
            if (length < 8)
            {
                throw new SafetensorsException(
                    $"{path}: the file is only {length} bytes, but a safetensors file starts with an 8-byte header length; the file is truncated or not a safetensors file — re-download it");
            }

            Span<byte> lengthBytes = stackalloc byte[8];
            stream.ReadExactly(lengthBytes);
            ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
            if (headerLength > MaxHeaderBytes)
            {
                throw new SafetensorsException(
                    $"{path}: header length {headerLength} bytes exceeds the {MaxHeaderBytes / (1024 * 1024)} MB limit; the file is corrupt or not a safetensors file — re-download it");
            }
            if (8 + (long)headerLength > length)
            {
                throw new SafetensorsException(
                    $"{path}: header length {headerLength} bytes runs past the end of the {length}-byte file; the file is truncated — re-download it");
            }

            var header = new byte[headerLength];
            stream.ReadExactly(header);
            long dataOffset = 8 + (long)headerLength;
            var (tensors, metadata) = ParseHeader(header, path, dataOffset, length - dataOffset);

            file = new SafetensorsFile(path, length, dataOffset, tensors, metadata);
            file._map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0,
                MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            file._view = file._map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            file._view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            file._base = p + file._view.PointerOffset;
            return file;
        }
        catch (Exception e)
        {
            if (file is not null) file.Dispose();
            else stream.Dispose();
            if (e is SafetensorsException) throw;
            if (e is IOException or UnauthorizedAccessException)
                throw new SafetensorsException($"{path}: cannot read the file ({OneLine(e.Message)})", e);
            throw;
        }
    }

    /// <summary>Looks a tensor up by name, with an error that names this file when it is absent.</summary>
    public TensorInfo GetTensor(string name) =>
        Tensors.TryGetValue(name, out var t) ? t : throw new SafetensorsException($"{FilePath}: no tensor named '{name}'");

    /// <summary>
    /// A read-only view of <paramref name="byteCount"/> bytes of a tensor's data starting at
    /// <paramref name="byteOffset"/> within the tensor. Chunked because a span cannot exceed 2 GB
    /// while tensors in large models can.
    /// </summary>
    public ReadOnlySpan<byte> GetSpan(TensorInfo tensor, long byteOffset, int byteCount)
    {
        CheckOwnedReadable(tensor);
        ArgumentOutOfRangeException.ThrowIfNegative(byteOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(byteCount);
        if (byteOffset + byteCount > tensor.ByteLength)
        {
            throw new ArgumentOutOfRangeException(nameof(byteCount),
                $"bytes [{byteOffset}, {byteOffset + byteCount}) lie outside tensor '{tensor.Name}' of {tensor.ByteLength} bytes");
        }
        return new ReadOnlySpan<byte>(_base + tensor.FileOffset + byteOffset, byteCount);
    }

    /// <summary>The whole tensor's data; for tensors under 2 GB (use the chunked overload otherwise).</summary>
    public ReadOnlySpan<byte> GetSpan(TensorInfo tensor)
    {
        if (tensor.ByteLength > int.MaxValue)
        {
            throw new ArgumentException(
                $"tensor '{tensor.Name}' is {tensor.ByteLength} bytes, too large for one span; read it in chunks with GetSpan(tensor, offset, count)",
                nameof(tensor));
        }
        return GetSpan(tensor, 0, (int)tensor.ByteLength);
    }

    /// <summary>Pointer to the first byte of a tensor's data in the mapping, for zero-copy uploads. Valid until disposal.</summary>
    public byte* GetPointer(TensorInfo tensor)
    {
        CheckOwnedReadable(tensor);
        return _base + tensor.FileOffset;
    }

    /// <summary>Unmaps the file. Spans and pointers obtained earlier must no longer be used.</summary>
    public void Dispose()
    {
        if (_view is not null)
        {
            if (_base != null) _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
            _view.Dispose();
            _view = null;
        }
        _map?.Dispose();
        _map = null;
    }

    private void CheckOwnedReadable(TensorInfo tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(_base == null, this);
        if (!string.Equals(tensor.FilePath, FilePath, StringComparison.Ordinal)
            || !Tensors.TryGetValue(tensor.Name, out var own)
            || own.FileOffset != tensor.FileOffset || own.ByteLength != tensor.ByteLength)
        {
            throw new ArgumentException($"tensor '{tensor.Name}' from '{tensor.FilePath}' does not belong to '{FilePath}'", nameof(tensor));
        }
        if (tensor.DType == SafetensorsDType.Other)
        {
            throw new SafetensorsException(
                $"{FilePath}: tensor '{tensor.Name}' has dtype {tensor.DTypeName}, which this engine cannot read (supported: BF16, F16, F32); convert the checkpoint to bfloat16 or float16");
        }
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");

    private readonly record struct Entry(string Name, string DTypeName, long[] Shape, long Begin, long End);

    private static (IReadOnlyDictionary<string, TensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(
        byte[] header, string path, long dataOffset, long dataLength)
    {
        // Names are decoded lazily by JsonDocument, and a bad byte there throws without the file's name.
        try
        {
            _ = new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetCharCount(header);
        }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new SafetensorsException($"{path}: the header is not valid UTF-8 (at byte {8 + e.Index}); {Redownload}", e);
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsException(
                $"{path}: the header is not valid JSON ({OneLine(e.Message)}); {Redownload}", e);
        }

        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafetensorsException($"{path}: the header is JSON {root.ValueKind}, not an object; {Redownload}");

            // JsonDocument keeps duplicate keys (unlike the serializer, which silently keeps the last),
            // so a set catches a header that names one tensor twice.
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var entries = new List<Entry>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var prop in root.EnumerateObject())
            {
                string name = prop.Name;
                if (!seen.Add(name))
                    throw new SafetensorsException($"{path}: tensor '{name}' appears twice in the header; {Redownload}");
                if (name == "__metadata__")
                {
                    ParseMetadata(prop.Value, path, metadata);
                    continue;
                }
                entries.Add(ParseEntry(name, prop.Value, path, dataLength));
            }

            // Check non-overlap in data order; ties broken by end so zero-length tensors sort first.
            var sorted = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
            for (int i = 1; i < sorted.Count; i++)
            {
                var prev = sorted[i - 1];
                var cur = sorted[i];
                if (cur.Begin < prev.End)
                {
                    throw new SafetensorsException(
                        $"{path}: tensor '{cur.Name}' data_offsets [{cur.Begin}, {cur.End}] overlap the previous tensor '{prev.Name}' ending at {prev.End}; {Redownload}");
                }
            }

            var tensors = new OrderedDictionary<string, TensorInfo>(sorted.Count, StringComparer.Ordinal);
            foreach (var e in sorted)
            {
                tensors.Add(e.Name, new TensorInfo(e.Name, SafetensorsDTypes.Parse(e.DTypeName), e.DTypeName,
                    Array.AsReadOnly(e.Shape), dataOffset + e.Begin, e.End - e.Begin, path));
            }
            return (new ReadOnlyDictionary<string, TensorInfo>(tensors), new ReadOnlyDictionary<string, string>(metadata));
        }
    }

    private static void ParseMetadata(JsonElement value, string path, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException($"{path}: \"__metadata__\" is JSON {value.ValueKind}, not an object of strings; {Redownload}");
        foreach (var kv in value.EnumerateObject())
        {
            if (kv.Value.ValueKind != JsonValueKind.String)
            {
                throw new SafetensorsException(
                    $"{path}: \"__metadata__\" key '{kv.Name}' is JSON {kv.Value.ValueKind}, but metadata values must be strings; {Redownload}");
            }
            if (!metadata.TryAdd(kv.Name, kv.Value.GetString()!))
                throw new SafetensorsException($"{path}: \"__metadata__\" key '{kv.Name}' appears twice; {Redownload}");
        }
    }

    private static Entry ParseEntry(string name, JsonElement value, string path, long dataLength)
    {
        string where = $"{path}: tensor '{name}'";
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException($"{where} is JSON {value.ValueKind}, not an object with dtype, shape and data_offsets; {Redownload}");

        if (!value.TryGetProperty("dtype", out var dtypeEl))
            throw new SafetensorsException($"{where} has no \"dtype\"; {Redownload}");
        if (dtypeEl.ValueKind != JsonValueKind.String)
            throw new SafetensorsException($"{where} has \"dtype\" of JSON {dtypeEl.ValueKind}, expected a string such as \"BF16\"; {Redownload}");
        string dtype = dtypeEl.GetString()!;

        if (!value.TryGetProperty("shape", out var shapeEl))
            throw new SafetensorsException($"{where} has no \"shape\"; {Redownload}");
        if (shapeEl.ValueKind != JsonValueKind.Array)
            throw new SafetensorsException($"{where} has \"shape\" of JSON {shapeEl.ValueKind}, expected an array of non-negative integers; {Redownload}");
        var shape = new long[shapeEl.GetArrayLength()];
        int k = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new SafetensorsException($"{where} has shape entry {d.GetRawText()}, expected a non-negative integer; {Redownload}");
            shape[k++] = dim;
        }

        if (!value.TryGetProperty("data_offsets", out var offEl))
            throw new SafetensorsException($"{where} has no \"data_offsets\"; {Redownload}");
        if (offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw new SafetensorsException($"{where} has \"data_offsets\" {Truncate(offEl.GetRawText())}, expected [begin, end]; {Redownload}");
        long begin = ReadOffset(offEl[0], where);
        long end = ReadOffset(offEl[1], where);
        if (begin > end)
            throw new SafetensorsException($"{where} has data_offsets [{begin}, {end}] with begin after end; {Redownload}");
        if (end > dataLength)
        {
            throw new SafetensorsException(
                $"{where} data_offsets [{begin}, {end}] lie outside the {dataLength}-byte data area; the file is truncated or corrupt — re-download it");
        }

        int? bits = SafetensorsDTypes.BitsOf(dtype);
        if (bits is int b)
        {
            long elements = 1;
            bool overflow = false;
            foreach (var dim in shape)
            {
                if (dim != 0 && elements > long.MaxValue / dim) { overflow = true; break; }
                elements *= dim;
            }
            if (overflow || elements > long.MaxValue / b)
                throw new SafetensorsException($"{where} has shape {TensorInfo.FormatShape(shape)}, whose size overflows; {Redownload}");
            long expected = (elements * b + 7) / 8;
            if (end - begin != expected)
            {
                throw new SafetensorsException(
                    $"{where} has shape {TensorInfo.FormatShape(shape)} of {dtype} = {expected} bytes, but data_offsets [{begin}, {end}] span {end - begin} bytes; {Redownload}");
            }
        }
        // A dtype the spec does not define has no known size; its range is still checked for
        // bounds and overlap, and its data cannot be requested.
        return new Entry(name, dtype, shape, begin, end);
    }

    private static long ReadOffset(JsonElement e, string where)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out long v) || v < 0)
            throw new SafetensorsException($"{where} has data_offsets entry {Truncate(e.GetRawText())}, expected a non-negative integer; {Redownload}");
        return v;
    }

    private static string Truncate(string s) => OneLine(s.Length <= 60 ? s : s[..60] + "...");
}
