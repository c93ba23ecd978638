using System.Buffers.Binary;
using System.Text;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Tests.Safetensors;

/// <summary>One test per way a file can be broken: each must fail with a one-line message naming the file and the tensor.</summary>
public sealed class SafetensorsCorruptionTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string WriteRaw(string name, string headerJson, int dataBytes, ulong? headerLengthOverride = null)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLengthOverride ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        for (int i = 0; i < dataBytes; i++) bytes[8 + header.Length + i] = (byte)i;
        string path = _dir.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static SafetensorsException AssertFails(string path, params string[] mentions)
    {
        var ex = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(Path.GetFileName(path), ex.Message);
        foreach (var m in mentions) Assert.Contains(m, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        return ex;
    }

    private const string Good = """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}""";

    [Fact]
    public void Well_formed_reference_file_opens()
    {
        using var f = SafetensorsFile.Open(WriteRaw("good.safetensors", Good, 24));
        Assert.Equal(["w", "b"], f.Tensors.Keys);
    }

    [Fact]
    public void File_shorter_than_the_length_prefix()
    {
        string path = _dir.File("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        AssertFails(path, "truncated");
    }

    [Fact]
    public void Missing_file() => AssertFails(_dir.File("absent.safetensors"), "not found");

    [Fact]
    public void Truncated_data_area_names_the_tensor_that_runs_off_the_end()
    {
        byte[] golden = File.ReadAllBytes(Fixtures.TinySafetensors);
        string path = _dir.File("truncated.safetensors");
        File.WriteAllBytes(path, golden[..(golden.Length - 1000)]);
        AssertFails(path, "'model.layers.1.mlp.down_proj.weight'", "truncated");
    }

    [Fact]
    public void Truncated_inside_the_header()
    {
        byte[] golden = File.ReadAllBytes(Fixtures.TinySafetensors);
        string path = _dir.File("cut-header.safetensors");
        File.WriteAllBytes(path, golden[..500]);
        AssertFails(path, "header length", "truncated");
    }

    [Fact]
    public void Header_length_above_the_cap() =>
        AssertFails(WriteRaw("huge.safetensors", Good, 24, headerLengthOverride: 200UL * 1024 * 1024), "header length", "limit");

    [Fact]
    public void Header_length_from_garbage_bytes() =>
        AssertFails(WriteRaw("garbage.safetensors", Good, 24, headerLengthOverride: ulong.MaxValue), "header length");

    [Fact]
    public void Bad_json() =>
        AssertFails(WriteRaw("badjson.safetensors", """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]""", 16), "not valid JSON");

    [Fact]
    public void Header_not_an_object() =>
        AssertFails(WriteRaw("array.safetensors", "[1,2,3]", 0), "not an object");

    [Theory]
    [InlineData("""{"w":{"shape":[2],"data_offsets":[0,8]}}""", "\"dtype\"")]
    [InlineData("""{"w":{"dtype":"F32","data_offsets":[0,8]}}""", "\"shape\"")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2]}}""", "\"data_offsets\"")]
    [InlineData("""{"w":{"dtype":5,"shape":[2],"data_offsets":[0,8]}}""", "\"dtype\"")]
    [InlineData("""{"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}""", "\"shape\"")]
    [InlineData("""{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", "shape entry -2")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}""", "shape entry 2.5")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}""", "[begin, end]")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}}""", "data_offsets entry")]
    [InlineData("""{"w":"F32"}""", "not an object")]
    public void Missing_or_mistyped_field(string header, string mention) =>
        AssertFails(WriteRaw("field.safetensors", header, 8), "'w'", mention);

    [Fact]
    public void Offsets_outside_the_data_area() =>
        AssertFails(WriteRaw("outside.safetensors", """{"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}""", 16), "'w'", "[8, 24]", "outside");

    [Fact]
    public void Begin_after_end() =>
        AssertFails(WriteRaw("reversed.safetensors", """{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}""", 16), "'w'", "begin after end");

    [Fact]
    public void Overlapping_tensors_name_both()
    {
        const string header = """{"x":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},"y":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}""";
        AssertFails(WriteRaw("overlap.safetensors", header, 32), "'y'", "'x'", "overlap", "ending at 24");
    }

    [Fact]
    public void Byte_size_not_matching_shape_and_dtype() =>
        AssertFails(WriteRaw("size.safetensors", """{"w":{"dtype":"BF16","shape":[3,4],"data_offsets":[0,16]}}""", 16), "'w'", "[3, 4]", "24 bytes", "16 bytes");

    [Fact]
    public void Byte_size_is_checked_for_spec_dtypes_we_do_not_read() =>
        AssertFails(WriteRaw("i64size.safetensors", """{"ids":{"dtype":"I64","shape":[3],"data_offsets":[0,16]}}""", 16), "'ids'", "I64");

    [Fact]
    public void Duplicate_tensor_names()
    {
        const string header = """{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""";
        AssertFails(WriteRaw("dup.safetensors", header, 16), "'w'", "twice");
    }

    [Fact]
    public void Metadata_with_non_string_value() =>
        AssertFails(WriteRaw("meta.safetensors", """{"__metadata__":{"total":5},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4), "__metadata__", "'total'");

    [Fact]
    public void Gaps_and_trailing_bytes_are_tolerated()
    {
        const string header = """{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"b":{"dtype":"F16","shape":[2],"data_offsets":[16,20]}}""";
        using var f = SafetensorsFile.Open(WriteRaw("gaps.safetensors", header, 32));
        Assert.Equal(["a", "b"], f.Tensors.Keys);
        Assert.Equal(f.DataOffset + 8, f.Tensors["a"].FileOffset);
    }

    [Fact]
    public void Unsupported_dtype_opens_but_refuses_its_data()
    {
        const string header = """{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"ids":{"dtype":"I64","shape":[1],"data_offsets":[8,16]},"q":{"dtype":"Q4_WEIRD","shape":[7],"data_offsets":[16,20]}}""";
        string path = WriteRaw("extra.safetensors", header, 20);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(4, f.GetSpan(f.GetTensor("w")).Length);

        var ids = f.GetTensor("ids");
        Assert.Equal(SafetensorsDType.Other, ids.DType);
        Assert.Equal("I64", ids.DTypeName);
        var ex = Assert.Throws<SafetensorsException>(() => { _ = f.GetSpan(ids); });
        Assert.Contains("extra.safetensors", ex.Message);
        Assert.Contains("'ids'", ex.Message);
        Assert.Contains("I64", ex.Message);

        // A dtype name the spec does not define: size unknown, so only bounds are checked, and its data is refused too.
        var q = f.GetTensor("q");
        Assert.Equal("Q4_WEIRD", q.DTypeName);
        ex = Assert.Throws<SafetensorsException>(() => { _ = f.GetSpan(q); });
        Assert.Contains("'q'", ex.Message);
        Assert.Contains("Q4_WEIRD", ex.Message);
    }
}
