using System.Buffers;
using System.Buffers.Binary;
using System.Text.Json;

namespace IlgpuLlama.Safetensors;

/// <summary>One tensor to write: name, dtype, shape and its little-endian raw bytes.</summary>
public sealed record TensorToWrite(string Name, SafetensorsDType DType, long[] Shape, ReadOnlyMemory<byte> Data);

/// <summary>
/// Writes safetensors files the way the reference implementation does (header padded with spaces to
/// a multiple of 8 so the data area is 8-byte aligned). Every file goes to a temporary name in the
/// same directory and is renamed into place, so readers never see a half-written file.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>Writes one safetensors file; tensors are laid out in the given order.</summary>
    /// <exception cref="ArgumentException">Duplicate or reserved names, unsupported dtype, or data length not matching the shape.</exception>
    public static void Write(string path, IEnumerable<TensorToWrite> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        CheckTensors(list);
        WriteChecked(path, list, metadata);
    }

    /// <summary>
    /// Splits tensors, in the given order, into shards of at most <paramref name="maxShardBytes"/> data
    /// bytes each (a larger tensor gets a shard of its own), writes them as model-0000N-of-0000M.safetensors
    /// and then model.safetensors.index.json, last, so an index never names a shard that is not there yet.
    /// </summary>
    /// <returns>Paths of the shard files, in order, followed by the index path.</returns>
    public static IReadOnlyList<string> WriteSharded(string directory, IEnumerable<TensorToWrite> tensors, long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var list = tensors.ToList();
        CheckTensors(list);

        var shards = new List<List<TensorToWrite>>();
        var current = new List<TensorToWrite>();
        long currentBytes = 0;
        foreach (var t in list)
        {
            if (current.Count > 0 && currentBytes + t.Data.Length > maxShardBytes)
            {
                shards.Add(current);
                current = [];
                currentBytes = 0;
            }
            current.Add(t);
            currentBytes += t.Data.Length;
        }
        if (current.Count > 0 || shards.Count == 0) shards.Add(current);

        Directory.CreateDirectory(directory);
        var written = new List<string>();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string name = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            string shardPath = Path.Combine(directory, name);
            WriteChecked(shardPath, shards[i], metadata);
            written.Add(shardPath);
            foreach (var t in shards[i]) weightMap[t.Name] = name;
        }

        var index = Index(weightMap, list.Sum(t => (long)t.Data.Length));
        string indexPath = Path.Combine(directory, SafetensorsModel.IndexFileName);
        WriteAtomically(indexPath, s => s.Write(index));
        written.Add(indexPath);
        return written;
    }

    private static void CheckTensors(List<TensorToWrite> list)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in list)
        {
            ArgumentNullException.ThrowIfNull(t);
            if (string.IsNullOrEmpty(t.Name) || t.Name == "__metadata__")
                throw new ArgumentException($"tensor name '{t.Name}' is empty or reserved", "tensors");
            if (!names.Add(t.Name))
                throw new ArgumentException($"tensor '{t.Name}' is given twice", "tensors");
            if (t.DType == SafetensorsDType.Other)
                throw new ArgumentException($"tensor '{t.Name}': only BF16, F16, F32, I8 and U8 can be written", "tensors");
            ArgumentNullException.ThrowIfNull(t.Shape);
            long elements = 1;
            foreach (var d in t.Shape)
            {
                if (d < 0) throw new ArgumentException($"tensor '{t.Name}' has negative dimension {d}", "tensors");
                elements = checked(elements * d);
            }
            long expected = checked(elements * t.DType.SizeOf());
            if (t.Data.Length != expected)
            {
                throw new ArgumentException(
                    $"tensor '{t.Name}' has shape {TensorInfo.FormatShape(t.Shape)} of {t.DType.ToName()} = {expected} bytes but {t.Data.Length} bytes of data",
                    "tensors");
            }
        }
    }

    private static void WriteChecked(string path, List<TensorToWrite> list, IReadOnlyDictionary<string, string>? metadata)
    {
        var header = Header(list.Select(t => (t.Name, t.DType, t.Shape, (long)t.Data.Length)).ToList(), metadata);
        WriteAtomically(path, s =>
        {
            s.Write(header);
            foreach (var t in list) s.Write(t.Data.Span);
        });
    }

    /// <summary>
    /// The bytes before the data area of a safetensors file holding <paramref name="tensors"/> laid out
    /// in order (the 8-byte length, the JSON header padded with spaces to a multiple of 8), for writers
    /// that stream the data themselves; the data of tensor i starts at header length + the sum of the
    /// lengths before it.
    /// </summary>
    public static byte[] Header(IReadOnlyList<(string Name, SafetensorsDType DType, long[] Shape, long Bytes)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType.ToName());
                json.WriteStartArray("shape");
                foreach (var d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + t.Bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += t.Bytes;
            }
            json.WriteEndObject();
        }

        int padded = (buffer.WrittenCount + 7) / 8 * 8;
        var header = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)padded);
        buffer.WrittenSpan.CopyTo(header.AsSpan(8));
        header.AsSpan(8 + buffer.WrittenCount).Fill((byte)' ');
        return header;
    }

    /// <summary>The JSON of a model.safetensors.index.json mapping each tensor to its shard file.</summary>
    public static byte[] Index(IReadOnlyDictionary<string, string> weightMap, long totalSize)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalSize);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (tensor, shard) in weightMap.OrderBy(kv => kv.Key, StringComparer.Ordinal)) json.WriteString(tensor, shard);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    private static void WriteAtomically(string path, Action<FileStream> write)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var s = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(s);
                s.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }
}
