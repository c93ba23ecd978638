using System.Buffers.Binary;
using System.Runtime.InteropServices;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Tests.Safetensors;

public class SafetensorsWriterTests
{
    private static byte[] Bytes<T>(params T[] values) where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    [Fact]
    public void Round_trip_preserves_tensors_metadata_and_alignment()
    {
        using var dir = new TempDir();
        string path = dir.File("rt.safetensors");
        var tensors = new List<TensorToWrite>
        {
            new("a.f32", SafetensorsDType.F32, [2, 3], Bytes(1f, 2f, 3f, 4f, 5f, -6.5f)),
            new("b.bf16", SafetensorsDType.BF16, [3], Bytes<ushort>(0x3F80, 0xC000, 0x7FC0)),
            new("c.f16.scalar", SafetensorsDType.F16, [], Bytes<ushort>(0x3C00)),
            new("d.empty", SafetensorsDType.F32, [0, 4], ReadOnlyMemory<byte>.Empty),
            new("e.odd", SafetensorsDType.BF16, [1], Bytes<ushort>(0x1234)),
        };
        SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\"" });

        byte[] raw = File.ReadAllBytes(path);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(raw);
        Assert.Equal(0UL, (8 + n) % 8);
        Assert.Equal((byte)'}', raw.AsSpan(8, (int)n).TrimEnd((byte)' ')[^1]);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(tensors.Select(t => t.Name), file.Tensors.Keys);
        Assert.Equal("ünïcode \"quoted\"", file.Metadata["note"]);
        foreach (var t in tensors)
        {
            var info = file.Tensors[t.Name];
            Assert.Equal(t.DType, info.DType);
            Assert.Equal(t.Shape, info.Shape);
            Assert.Equal(t.Data.ToArray(), file.GetSpan(info).ToArray());
        }
        Assert.Equal(1, file.Tensors["c.f16.scalar"].ElementCount);
        Assert.Equal(0, file.Tensors["d.empty"].ElementCount);
    }

    [Fact]
    public void Write_replaces_an_existing_file_atomically()
    {
        using var dir = new TempDir();
        string path = dir.File("x.safetensors");
        SafetensorsWriter.Write(path, [new("t", SafetensorsDType.F32, [1], Bytes(1f))], null);
        SafetensorsWriter.Write(path, [new("u", SafetensorsDType.F32, [2], Bytes(2f, 3f))], null);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["u"], file.Tensors.Keys);
        Assert.Empty(file.Metadata);
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Writer_rejects_bad_input_and_leaves_nothing_behind()
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("t", SafetensorsDType.F32, [2], Bytes(1f))], null));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path,
            [new("t", SafetensorsDType.F32, [1], Bytes(1f)), new("t", SafetensorsDType.F32, [1], Bytes(1f))], null));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("__metadata__", SafetensorsDType.F32, [1], Bytes(1f))], null));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("t", SafetensorsDType.Other, [1], Bytes(1f))], null));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    private static List<TensorToWrite> GoldenTensors()
    {
        using var file = SafetensorsFile.Open(Fixtures.TinySafetensors);
        return file.Tensors.Values
            .Select(t => new TensorToWrite(t.Name, t.DType, t.Shape.ToArray(), file.GetSpan(t).ToArray()))
            .ToList();
    }

    [Fact]
    public void Sharded_round_trip_reproduces_the_golden_tensors()
    {
        using var dir = new TempDir();
        var tensors = GoldenTensors();
        var written = SafetensorsWriter.WriteSharded(dir.Path, tensors, maxShardBytes: 200_000, new Dictionary<string, string> { ["format"] = "pt" });

        Assert.Equal(SafetensorsModel.IndexFileName, Path.GetFileName(written[^1]));
        var shardNames = written.Take(written.Count - 1).Select(Path.GetFileName).ToList();
        Assert.True(shardNames.Count >= 4);
        Assert.Equal($"model-00001-of-{shardNames.Count:D5}.safetensors", shardNames[0]);
        Assert.Equal($"model-{shardNames.Count:D5}-of-{shardNames.Count:D5}.safetensors", shardNames[^1]);

        using var model = SafetensorsModel.Open(dir.Path);
        Assert.True(model.IsSharded);
        Assert.Equal(shardNames.Count, model.Files.Count);
        Assert.Equal(tensors.Count, model.Tensors.Count);
        foreach (var t in tensors)
        {
            var info = model.GetTensor(t.Name);
            Assert.Equal(t.Shape, info.Shape);
            Assert.Equal(t.Data.ToArray(), model.GetSpan(info).ToArray());
        }
        // Every shard except one holding a single oversized tensor stays within the limit.
        Assert.All(model.Files, f => Assert.True(f.Tensors.Count == 1 || f.Tensors.Values.Sum(t => t.ByteLength) <= 200_000));
        Assert.True(model.Files.Select(f => f.Tensors.Values.First().FilePath).Distinct().Count() == model.Files.Count);
    }

    [Fact]
    public void Sharded_model_prefers_the_index_over_a_stale_single_file()
    {
        using var dir = new TempDir();
        SafetensorsWriter.WriteSharded(dir.Path, GoldenTensors(), 300_000);
        SafetensorsWriter.Write(Path.Combine(dir.Path, SafetensorsModel.SingleFileName), [new("stale", SafetensorsDType.F32, [1], Bytes(1f))], null);
        using var model = SafetensorsModel.Open(dir.Path);
        Assert.True(model.IsSharded);
        Assert.Equal(20, model.Tensors.Count);
    }
}
