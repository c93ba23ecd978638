using System.Buffers.Binary;
using IlgpuLlama.Gguf;
using IlgpuLlama.Tests.Cli;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Gguf;

/// <summary>
/// The malformed-GGUF sweep (docs/reliability.md): each case breaks one thing in a valid Llama GGUF
/// and runs <c>generate --model FILE</c>; each must end with exit code 1 and one line that names the
/// file and the problem: never a crash, a stack trace or a read past the end.
/// </summary>
public sealed class GgufCorruptionTests(GgufTestModel model, ITestOutputHelper output) : IClassFixture<GgufTestModel>
{
    /// <summary>A valid file, from the test model, with every matrix in <paramref name="type"/>.</summary>
    GgufWriter Valid(GgmlType type = GgmlType.F16) => GgufWriter.FromHuggingFace(model.HfDir, _ => type);

    /// <summary>Offset of the first metadata key's length field (after magic, version and the two counts).</summary>
    const int FirstKey = 24;

    public static TheoryData<string> Cases => new(CaseList.Keys);

    static readonly Dictionary<string, (Func<GgufCorruptionTests, byte[]> Make, string Mention)> CaseList = new()
    {
        ["empty file"] = (_ => [], "shorter than a GGUF header"),
        ["10 bytes"] = (t => t.Valid().ToBytes()[..10], "shorter than a GGUF header"),
        ["bad magic"] = (t => Patch(t.Valid().ToBytes(), 0, "GGML"u8.ToArray()), "not a GGUF file"),
        ["big-endian magic"] = (t => { var w = t.Valid(); w.Magic = 0x47475546; return w.ToBytes(); }, "big-endian"),
        ["safetensors file named .gguf"] = (_ => File.ReadAllBytes(Safetensors.Fixtures.TinySafetensors), "not a GGUF file"),
        ["version 1"] = (t => { var w = t.Valid(); w.Version = 1; return w.ToBytes(); }, "version 1"),
        ["version 99"] = (t => { var w = t.Valid(); w.Version = 99; return w.ToBytes(); }, "version 99"),
        ["huge tensor count"] = (t => { var w = t.Valid(); w.TensorCountOverride = 1UL << 62; return w.ToBytes(); }, "tensor count"),
        ["huge metadata count"] = (t => { var w = t.Valid(); w.KvCountOverride = ulong.MaxValue; return w.ToBytes(); }, "metadata count"),
        ["metadata count one too many"] = (t => { var w = t.Valid(); w.KvCountOverride = (ulong)w.Metadata.Count + 1; return w.ToBytes(); }, "corrupt or truncated"),
        ["truncated in the metadata"] = (t => t.Valid().ToBytes()[..2000], "corrupt or truncated"),
        ["key length past the end"] = (t => PatchU64(t.Valid().ToBytes(), FirstKey, 1UL << 40), "claims"),
        ["key not UTF-8"] = (t => Patch(t.Valid().ToBytes(), FirstKey + 8, [0xFF]), "not valid UTF-8"),
        ["duplicate key"] = (t => t.Valid().Add("general.architecture", "llama").ToBytes(), "appears twice"),
        ["unknown value type"] = (t => PatchU32(t.Valid().ToBytes(), FirstKey + 8 + "general.architecture".Length, 99), "unknown value type 99"),
        ["array of arrays"] = (t => { var w = t.Valid(); w.Add("x.nested", new int[] { 1 }); var b = w.ToBytes(); return PatchU32(b, IndexOfKeyValue(b, "x.nested") + 4, 9); }, "array of arrays"),
        ["array length past the end"] = (t => { var w = t.Valid(); w.Add("x.list", new int[] { 1, 2 }); var b = w.ToBytes(); return PatchU64(b, IndexOfKeyValue(b, "x.list") + 8, 1UL << 50); }, "x.list"),
        ["token string not UTF-8"] = (t => { var b = t.Valid().ToBytes(); int at = IndexOf(b, "<|begin_of_text|>"u8.ToArray()); return Patch(b, at, [0xC3, 0x28]); }, "not valid UTF-8"),
        ["bool of value 2"] = (t => { var w = t.Valid(); w.Add("x.flag", true); var b = w.ToBytes(); return Patch(b, IndexOfKeyValue(b, "x.flag") + 4, [2]); }, "bool of value 2"),
        ["alignment 0"] = (t => t.Valid().Add("general.alignment", 0u).ToBytes(), "general.alignment"),
        ["alignment 48"] = (t => t.Valid().Add("general.alignment", 48u).ToBytes(), "not a power of two"),
        ["alignment as a string"] = (t => t.Valid().Add("general.alignment", "32").ToBytes(), "expected a uint32"),
        ["alignment 64 with data at 32"] = (t => { var w = t.Valid(); w.Add("general.alignment", 64u); w.Tensors[1].OffsetOverride = 32 * 3; return w.ToBytes(); }, "not a multiple of the alignment"),
        ["tensor with 0 dimensions"] = (t => { var w = t.Valid(); w.Tensors[0].Dims = []; return w.ToBytes(); }, "0 dimensions"),
        ["tensor with 5 dimensions"] = (t => { var w = t.Valid(); w.Tensors[0].Dims = [1, 1, 1, 1, 32]; return w.ToBytes(); }, "5 dimensions"),
        ["tensor dimension 0"] = (t => { var w = t.Valid(); w.Tensors[1].Dims = [256, 0]; return w.ToBytes(); }, "dimension 1 is 0"),
        ["tensor of unknown ggml type"] = (t => { var w = t.Valid(); w.Tensors[1].Type = (GgmlType)77; return w.ToBytes(); }, "ggml type 77"),
        ["tensor of a type the engine does not read"] = (t => { var w = t.Valid(); var x = w.Tensors.First(x => x.Name == "blk.0.ffn_up.weight"); x.Type = GgmlType.IQ2_XXS; x.Data = new byte[x.Dims[1] * 66]; return w.ToBytes(); }, "IQ2_XXS"),
        ["rows not whole blocks"] = (t => { var w = t.Valid(); var x = w.Tensors.First(x => x.Name == "blk.0.ffn_up.weight"); x.Type = GgmlType.Q4_K; x.Dims = [100, 512]; return w.ToBytes(); }, "whole number"),
        ["data offset not aligned"] = (t => { var w = t.Valid(); w.Tensors[2].OffsetOverride = 7; return w.ToBytes(); }, "not a multiple of the alignment"),
        ["data offset past the end"] = (t => { var w = t.Valid(); w.Tensors[2].OffsetOverride = 1UL << 40; return w.ToBytes(); }, "runs past the end"),
        ["overlapping tensors"] = (t => { var w = t.Valid(); w.Tensors[3].OffsetOverride = 0; return w.ToBytes(); }, "overlaps"),
        ["truncated data area"] = (t => { var b = t.Valid().ToBytes(); return b[..(b.Length - 1000)]; }, "runs past the end"),
        ["duplicate tensor name"] = (t => { var w = t.Valid(); w.Tensors[2].Name = w.Tensors[3].Name; return w.ToBytes(); }, "appears twice"),
        ["empty tensor name"] = (t => { var w = t.Valid(); w.Tensors[2].Name = ""; return w.ToBytes(); }, "empty name"),
        ["tensor name of 80 bytes"] = (t => { var w = t.Valid(); w.Tensors[2].Name = new string('x', 80); return w.ToBytes(); }, "longer than"),
        ["missing llama.block_count"] = (t => { var w = t.Valid(); w.Metadata.RemoveAll(m => m.Key == "llama.block_count"); return w.ToBytes(); }, "llama.block_count"),
        ["llama.block_count as a string"] = (t => t.Valid().Set("llama.block_count", "2").ToBytes(), "llama.block_count"),
        ["llama.block_count 0"] = (t => t.Valid().Set("llama.block_count", 0u).ToBytes(), "not a positive size"),
        ["missing architecture"] = (t => { var w = t.Valid(); w.Metadata.RemoveAll(m => m.Key == "general.architecture"); return w.ToBytes(); }, "general.architecture"),
        ["architecture qwen2"] = (t => t.Valid().Set("general.architecture", "qwen2").ToBytes(), "'qwen2'"),
        ["SentencePiece tokenizer"] = (t => t.Valid().Set("tokenizer.ggml.model", "llama").ToBytes(), "'llama'"),
        ["token types shorter than tokens"] = (t => t.Valid().Set("tokenizer.ggml.token_type", new int[] { 1, 1 }).ToBytes(), "token_type"),
        ["missing tensor"] = (t => { var w = t.Valid(); w.Tensors.RemoveAll(x => x.Name == "blk.1.ffn_down.weight"); return w.ToBytes(); }, "blk.1.ffn_down.weight"),
        ["tensor of the wrong shape"] = (t => { var w = t.Valid(); var x = w.Tensors.First(x => x.Name == "blk.0.attn_k.weight"); x.Dims = [x.Dims[1], x.Dims[0]]; return w.ToBytes(); }, "blk.0.attn_k.weight"),
        ["heads not dividing kv heads"] = (t => t.Valid().Set("llama.attention.head_count_kv", 3u).ToBytes(), "num_key_value_heads"),
        ["NaN in an F16 tensor"] = (t => { var w = t.Valid(); var x = w.Tensors.First(x => x.Name == "blk.1.attn_output.weight"); x.Data[10] = 0x00; x.Data[11] = 0x7E; return w.ToBytes(); }, "NaN"),
        ["infinite Q8_0 scale"] = (t => { var w = t.Valid(GgmlType.Q8_0); var x = w.Tensors.First(x => x.Name == "blk.0.ffn_gate.weight"); x.Data[34] = 0x00; x.Data[35] = 0x7C; return w.ToBytes(); }, "infinite block scale"),
        ["rope_freqs of the wrong length"] = (t => { var w = t.Valid(); var x = w.Tensors.First(x => x.Name == GgufLlama.RopeFreqsName); x.Dims = [16]; x.Data = x.Data[..64]; return w.ToBytes(); }, "rope_freqs"),
    };

    static byte[] Patch(byte[] bytes, int at, byte[] with)
    {
        with.CopyTo(bytes, at);
        return bytes;
    }

    static byte[] PatchU32(byte[] bytes, int at, uint value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), value);
        return bytes;
    }

    static byte[] PatchU64(byte[] bytes, int at, ulong value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), value);
        return bytes;
    }

    static int IndexOf(byte[] bytes, byte[] what) => bytes.AsSpan().IndexOf(what);

    /// <summary>Offset of the value type field that follows a key.</summary>
    static int IndexOfKeyValue(byte[] bytes, string key) => IndexOf(bytes, System.Text.Encoding.UTF8.GetBytes(key)) + key.Length;

    [Fact]
    public void The_sweep_has_at_least_thirty_cases() => Assert.True(CaseList.Count >= 30, $"{CaseList.Count} cases");

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_malformed_file_fails_with_one_line_naming_it(string name)
    {
        var (make, mention) = CaseList[name];
        string path = System.IO.Path.Combine(model.Root, "bad-" + name.Replace(' ', '-') + ".gguf");
        File.WriteAllBytes(path, make(this));
        try
        {
            var r = CliHarness.Run("generate", "--model", path, "--prompt", "Hi", "--max-new-tokens", "1", "--device", "cpu", "--max-seq-len", "16");
            string[] errors = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("error:", StringComparison.Ordinal) || l.Contains("   at ")).ToArray();
            output.WriteLine($"{name}: exit {r.ExitCode}: {string.Join(" | ", errors)}");
            Assert.Equal(1, r.ExitCode);
            Assert.Single(errors);
            Assert.DoesNotContain("internal error", errors[0]);
            Assert.Contains(System.IO.Path.GetFileName(path), errors[0]);
            Assert.Contains(mention, errors[0]);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
