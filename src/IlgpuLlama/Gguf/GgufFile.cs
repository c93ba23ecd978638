using System.Collections.ObjectModel;
using System.IO.MemoryMappedFiles;
using System.Text;

namespace IlgpuLlama.Gguf;

/// <summary>The value types of GGUF metadata (gguf.h's <c>enum gguf_type</c>).</summary>
public enum GgufValueType : uint
{
#pragma warning disable CS1591 // the names are GGUF's
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
#pragma warning restore CS1591
}

/// <summary>A metadata array: its element type and its values (byte[], int[], string[], ... by element type).</summary>
public sealed record GgufArray(GgufValueType ElementType, Array Values)
{
    /// <summary>Number of elements.</summary>
    public int Count => Values.Length;
}

/// <summary>
/// One tensor of a GGUF file: its ggml type, its dimensions in ggml order (<see cref="Dims"/>[0] is
/// the length of a row, the fastest-moving index) and the absolute byte range of its data.
/// </summary>
/// <param name="Name">The name in the file (blk.0.attn_q.weight).</param>
/// <param name="Type">The ggml element type.</param>
/// <param name="Dims">ne[0], ne[1], ...: a [out, in] matrix of PyTorch is [in, out] here.</param>
/// <param name="FileOffset">Absolute offset of the first byte in <paramref name="FilePath"/>.</param>
/// <param name="ByteLength">Bytes of data.</param>
/// <param name="FilePath">The file holding the data (a split set has several).</param>
public sealed record GgufTensor(string Name, GgmlType Type, IReadOnlyList<long> Dims, long FileOffset, long ByteLength, string FilePath)
{
    /// <summary>Values in one row (ne[0]).</summary>
    public long RowLength => Dims[0];

    /// <summary>Rows: the product of every dimension after the first.</summary>
    public long Rows => Dims.Skip(1).Aggregate(1L, (a, d) => a * d);

    /// <summary>Bytes of one row.</summary>
    public long RowBytes => ByteLength / Math.Max(1, Rows);

    /// <summary>The shape in PyTorch order (outermost first), as the engine's tensors are described.</summary>
    public long[] Shape => Dims.Reverse().ToArray();

    /// <summary>The type and ggml dimensions, for messages: Q4_K [2048, 8192].</summary>
    public string Description => $"{GgmlTypes.Name(Type)} [{string.Join(", ", Dims)}]";
}

/// <summary>
/// One GGUF file (versions 2 and 3), validated in full on open and then memory-mapped read-only.
/// Every count, string length, array length, dimension, offset and alignment is checked against the
/// file before it is used: nothing is allocated from an unchecked count and nothing is read past the
/// end. Tensor data must lie inside the data area, aligned to <c>general.alignment</c> and without
/// overlaps. Spans and pointers handed out are valid until <see cref="Dispose"/>.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    /// <summary>"GGUF" read as a little-endian uint32.</summary>
    public const uint Magic = 0x46554747;

    /// <summary>The alignment of tensor data when <c>general.alignment</c> is absent.</summary>
    public const int DefaultAlignment = 32;

    /// <summary>ggml's limit on a tensor's dimensions.</summary>
    public const int MaxDims = 4;

    /// <summary>ggml's limit on a tensor name's length in bytes (GGML_MAX_NAME less its terminating zero).</summary>
    public const int MaxNameBytes = 63;

    const string Redownload = "the file is corrupt or truncated — download it again";

    MemoryMappedFile? map;
    MemoryMappedViewAccessor? view;
    byte* basePointer;

    GgufFile(string path, long length, uint version, int alignment, long dataOffset, IReadOnlyDictionary<string, object> metadata, IReadOnlyDictionary<string, GgufTensor> tensors)
    {
        FilePath = path;
        FileLength = length;
        Version = version;
        Alignment = alignment;
        DataOffset = dataOffset;
        Metadata = metadata;
        Tensors = tensors;
    }

    /// <summary>The path the file was opened with.</summary>
    public string FilePath { get; }

    /// <summary>Bytes in the file.</summary>
    public long FileLength { get; }

    /// <summary>The GGUF version (2 or 3).</summary>
    public uint Version { get; }

    /// <summary>Alignment of tensor data in bytes (<c>general.alignment</c>, 32 by default).</summary>
    public int Alignment { get; }

    /// <summary>Absolute offset of the data area.</summary>
    public long DataOffset { get; }

    /// <summary>
    /// Every metadata key in file order, its value boxed as its GGUF type (byte, sbyte, ushort, short,
    /// uint, int, float, bool, string, ulong, long, double) or a <see cref="GgufArray"/>.
    /// </summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>Every tensor by name, in data order.</summary>
    public IReadOnlyDictionary<string, GgufTensor> Tensors { get; }

    /// <summary>Opens, validates and maps a GGUF file.</summary>
    /// <exception cref="GgufException">The file is missing, unreadable or not a valid GGUF file.</exception>
    public static GgufFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        IO.InputFile.Check(path);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, bufferSize: 1, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new GgufException($"{path}: file not found");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GgufException($"{path}: cannot open the file ({e.Message.ReplaceLineEndings(" ")})", e);
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        byte* p = null;
        try
        {
            long length = stream.Length;
            if (length < 24)
                throw new GgufException($"{path}: the file is only {length} bytes, shorter than a GGUF header (24 bytes); {Redownload}");
            map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            byte* start = p + view.PointerOffset;
            var file = Parse(path, start, length);
            file.map = map;
            file.view = view;
            file.basePointer = start;
            return file;
        }
        catch (Exception e)
        {
            if (p != null)
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            if (map is not null)
                map.Dispose();
            else
                stream.Dispose();
            if (e is IOException or UnauthorizedAccessException)
                throw new GgufException($"{path}: cannot read the file ({e.Message.ReplaceLineEndings(" ")})", e);
            throw;
        }
    }

    /// <summary>A read-only view of <paramref name="count"/> bytes of a tensor's data from <paramref name="offset"/> within it.</summary>
    public ReadOnlySpan<byte> GetSpan(GgufTensor tensor, long offset, int count)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(basePointer == null, this);
        if (tensor.FilePath != FilePath || !Tensors.TryGetValue(tensor.Name, out var own) || own != tensor)
            throw new ArgumentException($"tensor '{tensor.Name}' does not belong to '{FilePath}'", nameof(tensor));
        if (offset < 0 || count < 0 || offset + count > tensor.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(count), $"bytes [{offset}, {offset + count}) lie outside tensor '{tensor.Name}' of {tensor.ByteLength} bytes");
        return new ReadOnlySpan<byte>(basePointer + tensor.FileOffset + offset, count);
    }

    /// <summary>Unmaps the file; spans obtained earlier must no longer be used.</summary>
    public void Dispose()
    {
        if (view is not null)
        {
            if (basePointer != null)
                view.SafeMemoryMappedViewHandle.ReleasePointer();
            basePointer = null;
            view.Dispose();
            view = null;
        }
        map?.Dispose();
        map = null;
    }

    /// <summary>The value of an integer key of any integer type, or null when the key is absent.</summary>
    /// <exception cref="GgufException">The key holds another type.</exception>
    public long? GetInteger(string key)
    {
        if (!Metadata.TryGetValue(key, out var v))
            return null;
        return v switch
        {
            byte b => b,
            sbyte b => b,
            ushort s => s,
            short s => s,
            uint u => u,
            int i => i,
            ulong u when u <= long.MaxValue => (long)u,
            long l => l,
            ulong u => throw new GgufException($"{FilePath}: metadata key '{key}' is {u}, too large; {Redownload}"),
            _ => throw WrongType(key, v, "an integer"),
        };
    }

    /// <summary>The value of a floating-point key (integers accepted), or null when the key is absent.</summary>
    public double? GetNumber(string key)
    {
        if (!Metadata.TryGetValue(key, out var v))
            return null;
        return v switch
        {
            float f => f,
            double d => d,
            _ => GetInteger(key),
        };
    }

    /// <summary>The value of a string key, or null when the key is absent.</summary>
    public string? GetString(string key) =>
        !Metadata.TryGetValue(key, out var v) ? null : v as string ?? throw WrongType(key, v, "a string");

    /// <summary>The value of an array key whose elements have type <paramref name="elementType"/> (null when absent).</summary>
    public T[]? GetArray<T>(string key, GgufValueType elementType)
    {
        if (!Metadata.TryGetValue(key, out var v))
            return null;
        return v is GgufArray a && a.Values is T[] values && a.ElementType == elementType ? values : throw WrongType(key, v, $"an array of {elementType}");
    }

    /// <summary>An integer array of any integer element type as int[] (null when absent).</summary>
    public int[]? GetIntegerArray(string key)
    {
        if (!Metadata.TryGetValue(key, out var v))
            return null;
        if (v is not GgufArray a)
            throw WrongType(key, v, "an array of integers");
        var result = new int[a.Count];
        for (int i = 0; i < a.Count; i++)
        {
            object e = a.Values.GetValue(i)!;
            long x = e switch
            {
                byte b => b,
                sbyte b => b,
                ushort s => s,
                short s => s,
                uint u => u,
                int n => n,
                long l => l,
                ulong u when u <= long.MaxValue => (long)u,
                _ => throw WrongType(key, v, "an array of integers"),
            };
            if (x is < int.MinValue or > int.MaxValue)
                throw new GgufException($"{FilePath}: metadata key '{key}' element {i} is {x}, out of range; {Redownload}");
            result[i] = (int)x;
        }
        return result;
    }

    GgufException WrongType(string key, object value, string expected) =>
        new($"{FilePath}: metadata key '{key}' is {Describe(value)}, expected {expected}; {Redownload}");

    /// <summary>A value's GGUF type in words (for messages).</summary>
    public static string Describe(object value) => value switch
    {
        string => "a string",
        bool => "a bool",
        float or double => "a float",
        GgufArray a => $"an array of {a.ElementType}",
        _ => $"a {value.GetType().Name}",
    };

    /// <summary>Bounds-checked reads from the mapped file.</summary>
    sealed class Reader(string path, byte* start, long length)
    {
        static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

        public long Position;

        public long Remaining => length - Position;

        public GgufException Truncated(string what) =>
            new($"{path}: {what} at byte {Position:N0} runs past the end of the {length:N0}-byte file; {Redownload}");

        void Need(long bytes, string what)
        {
            if (bytes < 0 || bytes > Remaining)
                throw Truncated(what);
        }

        public byte U8(string what) { Need(1, what); return start[Position++]; }

        public ushort U16(string what) { Need(2, what); ushort v = *(ushort*)(start + Position); Position += 2; return v; }

        public uint U32(string what) { Need(4, what); uint v = *(uint*)(start + Position); Position += 4; return v; }

        public ulong U64(string what) { Need(8, what); ulong v = *(ulong*)(start + Position); Position += 8; return v; }

        public string String(string what)
        {
            ulong n = U64($"the length of {what}");
            if (n > (ulong)Remaining)
                throw new GgufException($"{path}: {what} at byte {Position - 8:N0} claims {n:N0} bytes, more than the {Remaining:N0} left in the file; {Redownload}");
            try
            {
                string s = StrictUtf8.GetString(start + Position, (int)Math.Min(n, int.MaxValue));
                Position += (long)n;
                return s;
            }
            catch (DecoderFallbackException)
            {
                throw new GgufException($"{path}: {what} at byte {Position:N0} is not valid UTF-8; {Redownload}");
            }
            catch (ArgumentException) when (n > int.MaxValue)
            {
                throw new GgufException($"{path}: {what} claims {n:N0} bytes; {Redownload}");
            }
        }

        /// <summary>Checks that <paramref name="count"/> items of at least <paramref name="minBytes"/> bytes each can still follow.</summary>
        public int Count(ulong count, int minBytes, string what)
        {
            if (count > (ulong)(Remaining / minBytes) || count > int.MaxValue)
                throw new GgufException($"{path}: {what} is {count:N0}, but the {Remaining:N0} bytes left in the file hold at most {Remaining / minBytes:N0}; {Redownload}");
            return (int)count;
        }

        public T[] Block<T>(int count, string what) where T : unmanaged
        {
            Need((long)count * sizeof(T), what);
            var result = new ReadOnlySpan<T>(start + Position, count).ToArray();
            Position += (long)count * sizeof(T);
            return result;
        }
    }

    static GgufFile Parse(string path, byte* start, long length)
    {
        var r = new Reader(path, start, length);
        uint magic = r.U32("the magic");
        if (magic != Magic)
        {
            string seen = Encoding.ASCII.GetString(start, 4);
            string hint = magic == 0x47475546 ? "it is a big-endian GGUF file, which this engine does not read; convert the model again on a little-endian machine"
                : magic is 0x67676D6C or 0x67676D66 or 0x67676A74 ? "it is a pre-GGUF GGML file (2023); convert the original model to GGUF with llama.cpp's convert_hf_to_gguf.py"
                : $"it starts with {Printable(seen)}, not \"GGUF\"; give a .gguf model file";
            throw new GgufException($"{path}: not a GGUF file: {hint}");
        }
        uint version = r.U32("the version");
        if (version == 1)
            throw new GgufException($"{path}: GGUF version 1 (2023) is not supported; download or convert the model again (versions 2 and 3 are read)");
        if (version is not (2 or 3))
            throw new GgufException($"{path}: GGUF version {version} is not one this engine reads (2 and 3); the file is corrupt, or newer than this engine");
        ulong tensorCount = r.U64("the tensor count");
        ulong kvCount = r.U64("the metadata count");
        // The smallest key-value pair: an empty key (8 bytes), its type (4) and a 1-byte value.
        int kvs = r.Count(kvCount, 13, "the metadata count");
        var metadata = new OrderedDictionary<string, object>(Math.Min(kvs, 4096), StringComparer.Ordinal);
        for (int i = 0; i < kvs; i++)
        {
            long at = r.Position;
            string key = r.String($"metadata key {i}");
            if (key.Length == 0)
                throw new GgufException($"{path}: metadata key {i} at byte {at:N0} is empty; {Redownload}");
            var type = (GgufValueType)r.U32($"the type of metadata key '{key}'");
            object value = ReadValue(r, path, key, type, allowArray: true);
            if (!metadata.TryAdd(key, value))
                throw new GgufException($"{path}: metadata key '{key}' appears twice; {Redownload}");
        }

        int alignment = DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out var alignValue))
        {
            if (alignValue is not uint a)
                throw new GgufException($"{path}: metadata key 'general.alignment' is {Describe(alignValue)}, expected a uint32; {Redownload}");
            if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 20))
                throw new GgufException($"{path}: metadata key 'general.alignment' is {a}, not a power of two up to 1 MiB; {Redownload}");
            alignment = (int)a;
        }

        // The smallest tensor info: an empty name (8), one dimension (4 + 8), type (4), offset (8).
        int tensors = r.Count(tensorCount, 32, "the tensor count");
        var infos = new List<(string Name, GgmlType Type, long[] Dims, ulong Offset, long Bytes)>(Math.Min(tensors, 65536));
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < tensors; i++)
        {
            string name = r.String($"the name of tensor {i}");
            if (name.Length == 0)
                throw new GgufException($"{path}: tensor {i} has an empty name; {Redownload}");
            if (Encoding.UTF8.GetByteCount(name) > MaxNameBytes)
                throw new GgufException($"{path}: tensor name '{Shorten(name)}' is longer than ggml's {MaxNameBytes} bytes; {Redownload}");
            if (!names.Add(name))
                throw new GgufException($"{path}: tensor '{name}' appears twice; {Redownload}");
            uint nDims = r.U32($"the dimension count of tensor '{name}'");
            if (nDims is 0 or > MaxDims)
                throw new GgufException($"{path}: tensor '{name}' has {nDims} dimensions, not 1 to {MaxDims}; {Redownload}");
            var dims = new long[nDims];
            long elements = 1;
            for (int d = 0; d < nDims; d++)
            {
                ulong ne = r.U64($"dimension {d} of tensor '{name}'");
                if (ne == 0 || ne > long.MaxValue)
                    throw new GgufException($"{path}: tensor '{name}' dimension {d} is {ne}, not a positive size; {Redownload}");
                dims[d] = (long)ne;
                if (elements > long.MaxValue / dims[d])
                    throw new GgufException($"{path}: tensor '{name}' has {string.Join(" x ", dims.Take(d + 1))} values, more than any file holds; {Redownload}");
                elements *= dims[d];
            }
            uint typeNumber = r.U32($"the type of tensor '{name}'");
            var type = (GgmlType)typeNumber;
            if (!GgmlTypes.TryGetBlock(type, out int blockValues, out int blockBytes))
                throw new GgufException($"{path}: tensor '{name}' has ggml type {typeNumber}, which no ggml version this engine knows defines; the file is corrupt, or from a newer llama.cpp");
            if (dims[0] % blockValues != 0)
                throw new GgufException($"{path}: tensor '{name}' is {GgmlTypes.Name(type)} with rows of {dims[0]} values, not a whole number of its {blockValues}-value blocks; {Redownload}");
            long bytes = elements / blockValues > long.MaxValue / blockBytes
                ? throw new GgufException($"{path}: tensor '{name}' [{string.Join(", ", dims)}] would need more bytes than any file holds; {Redownload}")
                : elements / blockValues * blockBytes;
            ulong offset = r.U64($"the data offset of tensor '{name}'");
            if (offset % (ulong)alignment != 0)
                throw new GgufException($"{path}: tensor '{name}' data offset {offset:N0} is not a multiple of the alignment {alignment}; {Redownload}");
            infos.Add((name, type, dims, offset, bytes));
        }

        long headerEnd = r.Position;
        long dataOffset = (headerEnd + alignment - 1) / alignment * alignment;
        long dataLength = length - dataOffset;
        if (tensors > 0 && dataLength < 0)
            throw new GgufException($"{path}: the tensor data would start at byte {dataOffset:N0}, past the end of the {length:N0}-byte file; {Redownload}");
        var result = new OrderedDictionary<string, GgufTensor>(infos.Count, StringComparer.Ordinal);
        GgufTensor? previous = null;
        foreach (var t in infos.OrderBy(t => t.Offset).ThenBy(t => t.Bytes))
        {
            if (t.Offset > (ulong)dataLength || t.Bytes > dataLength - (long)t.Offset)
                throw new GgufException($"{path}: tensor '{t.Name}' ({GgmlTypes.Name(t.Type)} [{string.Join(", ", t.Dims)}], {t.Bytes:N0} bytes at data offset {t.Offset:N0}) runs past the end of the file's {Math.Max(0, dataLength):N0}-byte data area; {Redownload}");
            var tensor = new GgufTensor(t.Name, t.Type, Array.AsReadOnly(t.Dims), dataOffset + (long)t.Offset, t.Bytes, path);
            if (previous is not null && tensor.FileOffset < previous.FileOffset + previous.ByteLength)
                throw new GgufException($"{path}: tensor '{t.Name}' at data offset {t.Offset:N0} overlaps tensor '{previous.Name}'; {Redownload}");
            result.Add(t.Name, tensor);
            previous = tensor;
        }
        return new GgufFile(path, length, version, alignment, dataOffset,
            new ReadOnlyDictionary<string, object>(metadata), new ReadOnlyDictionary<string, GgufTensor>(result));
    }

    static object ReadValue(Reader r, string path, string key, GgufValueType type, bool allowArray)
    {
        string what = $"the value of metadata key '{key}'";
        switch (type)
        {
            case GgufValueType.UInt8: return r.U8(what);
            case GgufValueType.Int8: return (sbyte)r.U8(what);
            case GgufValueType.UInt16: return r.U16(what);
            case GgufValueType.Int16: return (short)r.U16(what);
            case GgufValueType.UInt32: return r.U32(what);
            case GgufValueType.Int32: return (int)r.U32(what);
            case GgufValueType.Float32: return BitConverter.UInt32BitsToSingle(r.U32(what));
            case GgufValueType.UInt64: return r.U64(what);
            case GgufValueType.Int64: return (long)r.U64(what);
            case GgufValueType.Float64: return BitConverter.UInt64BitsToDouble(r.U64(what));
            case GgufValueType.Bool:
                byte b = r.U8(what);
                return b <= 1 ? b == 1 : throw new GgufException($"{path}: metadata key '{key}' is a bool of value {b}, not 0 or 1; {Redownload}");
            case GgufValueType.String: return r.String(what);
            case GgufValueType.Array when allowArray:
                var elementType = (GgufValueType)r.U32($"the element type of metadata key '{key}'");
                ulong n = r.U64($"the length of metadata key '{key}'");
                if (elementType == GgufValueType.Array)
                    throw new GgufException($"{path}: metadata key '{key}' is an array of arrays, which GGUF readers do not accept; {Redownload}");
                int size = ElementSize(elementType) ?? (elementType == GgufValueType.String ? 8 : 0);
                if (size == 0)
                    throw new GgufException($"{path}: metadata key '{key}' is an array of unknown type {(uint)elementType}; {Redownload}");
                int count = r.Count(n, size, $"the length of metadata key '{key}'");
                Array values = elementType switch
                {
                    GgufValueType.UInt8 => r.Block<byte>(count, what),
                    GgufValueType.Int8 => r.Block<sbyte>(count, what),
                    GgufValueType.UInt16 => r.Block<ushort>(count, what),
                    GgufValueType.Int16 => r.Block<short>(count, what),
                    GgufValueType.UInt32 => r.Block<uint>(count, what),
                    GgufValueType.Int32 => r.Block<int>(count, what),
                    GgufValueType.Float32 => r.Block<float>(count, what),
                    GgufValueType.UInt64 => r.Block<ulong>(count, what),
                    GgufValueType.Int64 => r.Block<long>(count, what),
                    GgufValueType.Float64 => r.Block<double>(count, what),
                    GgufValueType.Bool => Bools(r, path, key, count),
                    _ => Strings(r, key, count),
                };
                return new GgufArray(elementType, values);
            default:
                throw new GgufException($"{path}: metadata key '{key}' has unknown value type {(uint)type}; {Redownload}");
        }
    }

    static bool[] Bools(Reader r, string path, string key, int count)
    {
        var bytes = r.Block<byte>(count, $"the value of metadata key '{key}'");
        var result = new bool[count];
        for (int i = 0; i < count; i++)
            result[i] = bytes[i] <= 1 ? bytes[i] == 1 : throw new GgufException($"{path}: metadata key '{key}' element {i} is a bool of value {bytes[i]}; {Redownload}");
        return result;
    }

    static string[] Strings(Reader r, string key, int count)
    {
        var result = new string[count];
        for (int i = 0; i < count; i++)
            result[i] = r.String($"element {i} of metadata key '{key}'");
        return result;
    }

    static int? ElementSize(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
        _ => null,
    };

    static string Printable(string s) => "\"" + new string(s.Select(c => c is >= ' ' and <= '~' ? c : '?').ToArray()) + "\"";

    static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
