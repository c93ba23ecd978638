using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Tests.Safetensors;

public class SafetensorsFileTests
{
    [Fact]
    public void Golden_model_has_20_bf16_tensors_with_the_llama_shapes()
    {
        // 20 tensors (embedding, final norm, 9 per layer x 2 layers); with "__metadata__" the header has 21 entries.
        using var file = SafetensorsFile.Open(Fixtures.TinySafetensors);
        Assert.Equal(20, file.Tensors.Count);
        Assert.All(file.Tensors.Values, t => Assert.Equal(SafetensorsDType.BF16, t.DType));
        Assert.All(file.Tensors.Values, t => Assert.Equal("BF16", t.DTypeName));
        Assert.Equal("pt", file.Metadata["format"]);

        Assert.Equal([512L, 128], file.Tensors["model.embed_tokens.weight"].Shape);
        Assert.Equal([128L], file.Tensors["model.norm.weight"].Shape);
        Assert.Equal([128L, 128], file.Tensors["model.layers.1.self_attn.q_proj.weight"].Shape);
        Assert.Equal([32L, 128], file.Tensors["model.layers.0.self_attn.k_proj.weight"].Shape);
        Assert.Equal([344L, 128], file.Tensors["model.layers.1.mlp.up_proj.weight"].Shape);
        Assert.Equal([128L, 344], file.Tensors["model.layers.0.mlp.down_proj.weight"].Shape);
        Assert.False(file.Tensors.ContainsKey("lm_head.weight"));

        var embed = file.Tensors["model.embed_tokens.weight"];
        Assert.Equal(512L * 128, embed.ElementCount);
        Assert.Equal(512L * 128 * 2, embed.ByteLength);
        Assert.Equal(file.DataOffset, embed.FileOffset);

        // Enumeration follows file order, and the tensors tile the data area exactly.
        long expectedOffset = file.DataOffset;
        foreach (var t in file.Tensors.Values)
        {
            Assert.Equal(expectedOffset, t.FileOffset);
            expectedOffset += t.ByteLength;
        }
        Assert.Equal(file.FileLength, expectedOffset);
    }

    [Fact]
    public unsafe void Golden_first_values_match_a_manual_decode()
    {
        // Decode independently: header length, then the first bytes of the data area as little-endian bf16.
        byte[] raw = File.ReadAllBytes(Fixtures.TinySafetensors);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(raw);
        int data = checked((int)(8 + headerLength));
        float ManualBf16(int byteIndex) => BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(byteIndex)) << 16);

        using var file = SafetensorsFile.Open(Fixtures.TinySafetensors);
        var embed = file.GetTensor("model.embed_tokens.weight");
        var span = file.GetSpan(embed, 0, 8);
        var values = MemoryMarshal.Cast<byte, ushort>(span).ToArray().Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16)).ToArray();
        Assert.Equal([ManualBf16(data), ManualBf16(data + 2), ManualBf16(data + 4), ManualBf16(data + 6)], values);
        Assert.Equal(0xBD9D, MemoryMarshal.Cast<byte, ushort>(span)[0]); // the fixture's first bytes are 9d bd
        Assert.All(values, v => Assert.InRange(Math.Abs(v), 1e-4f, 2f));

        var norm = file.GetTensor("model.norm.weight");
        int normStart = checked((int)norm.FileOffset);
        Assert.Equal(ManualBf16(normStart), BitConverter.UInt32BitsToSingle((uint)MemoryMarshal.Cast<byte, ushort>(file.GetSpan(norm))[0] << 16));

        // Pointer and chunked span address the same bytes.
        byte* p = file.GetPointer(norm);
        Assert.Equal(raw[normStart + 10], p[10]);
        Assert.Equal(raw.AsSpan(normStart + 100, 50).ToArray(), file.GetSpan(norm, 100, 50).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => file.GetSpan(norm, 250, 10));
    }

    [Fact]
    public void Model_directory_with_single_file_opens_the_golden_weights()
    {
        using var model = SafetensorsModel.Open(Fixtures.TinyLlamaDir);
        Assert.False(model.IsSharded);
        Assert.Single(model.Files);
        Assert.Equal(20, model.Tensors.Count);
        var t = model.GetTensor("model.layers.0.input_layernorm.weight");
        Assert.Equal(256, model.GetSpan(t).Length);
        var ex = Assert.Throws<SafetensorsException>(() => model.GetTensor("lm_head.weight"));
        Assert.Contains("'lm_head.weight'", ex.Message);
    }

    [Fact]
    public void Disposed_file_refuses_access()
    {
        var file = SafetensorsFile.Open(Fixtures.TinySafetensors);
        var t = file.GetTensor("model.norm.weight");
        file.Dispose();
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => { _ = file.GetSpan(t, 0, 2); });
    }

    [Fact]
    public void Tensor_of_another_file_is_rejected()
    {
        using var dir = new TempDir();
        string copy = dir.File("copy.safetensors");
        File.Copy(Fixtures.TinySafetensors, copy);
        using var a = SafetensorsFile.Open(Fixtures.TinySafetensors);
        using var b = SafetensorsFile.Open(copy);
        Assert.Throws<ArgumentException>(() => { _ = b.GetSpan(a.GetTensor("model.norm.weight"), 0, 2); });
    }

    [Fact]
    public void Tensors_larger_than_2GB_are_read_in_chunks()
    {
        // A sparse file: a 3 GiB F16 tensor whose bytes are zero except a marker written near the end.
        // Only Unix file systems make SetLength sparse; on NTFS it would write 3 GiB of zeros.
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        string path = dir.File("big.safetensors");
        const long elements = 3L * 1024 * 1024 * 1024 / 2;
        string header = "{\"big\":{\"dtype\":\"F16\",\"shape\":[" + elements + "],\"data_offsets\":[0," + (elements * 2) + "]}}";
        byte[] headerBytes = System.Text.Encoding.UTF8.GetBytes(header.PadRight((header.Length + 7) / 8 * 8));
        long markerAt = elements * 2 - 4;
        using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)headerBytes.Length);
            fs.Write(len);
            fs.Write(headerBytes);
            fs.SetLength(8 + headerBytes.Length + elements * 2);
            fs.Position = 8 + headerBytes.Length + markerAt;
            fs.Write([0xDE, 0xAD, 0xBE, 0xEF]);
        }

        using var file = SafetensorsFile.Open(path);
        var t = file.GetTensor("big");
        Assert.Equal(elements * 2, t.ByteLength);
        Assert.Throws<ArgumentException>(() => { _ = file.GetSpan(t); });
        Assert.Equal(new byte[] { 0, 0, 0xDE, 0xAD, 0xBE, 0xEF }, file.GetSpan(t, markerAt - 2, 6).ToArray());
    }
}
