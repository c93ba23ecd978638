using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Tests.Safetensors;

public sealed class SafetensorsModelTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static TensorToWrite T(string name, int n) => new(name, SafetensorsDType.F32, [n], new byte[n * 4]);

    private void WriteIndex(string json) => File.WriteAllText(Path.Combine(_dir.Path, SafetensorsModel.IndexFileName), json);

    private SafetensorsException Fails(params string[] mentions)
    {
        var ex = Assert.Throws<SafetensorsException>(() => SafetensorsModel.Open(_dir.Path).Dispose());
        foreach (var m in mentions) Assert.Contains(m, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        return ex;
    }

    [Fact]
    public void Empty_directory_says_how_to_get_weights() =>
        Fails("no model.safetensors or model.safetensors.index.json", _dir.Path, "download");

    [Fact]
    public void Missing_directory() =>
        Assert.Contains("does not exist", Assert.Throws<SafetensorsException>(() => SafetensorsModel.Open(Path.Combine(_dir.Path, "nope"))).Message);

    [Fact]
    public void Index_naming_a_missing_shard()
    {
        SafetensorsWriter.Write(Path.Combine(_dir.Path, "a.safetensors"), [T("x", 1)], null);
        WriteIndex("""{"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}""");
        Fails("model.safetensors.index.json", "'b.safetensors'", "'y'", "missing");
    }

    [Fact]
    public void Index_entry_absent_from_its_shard()
    {
        SafetensorsWriter.Write(Path.Combine(_dir.Path, "a.safetensors"), [T("x", 1)], null);
        SafetensorsWriter.Write(Path.Combine(_dir.Path, "b.safetensors"), [T("y", 1)], null);
        WriteIndex("""{"weight_map":{"x":"a.safetensors","y":"a.safetensors","z":"b.safetensors"}}""");
        Fails("'y'", "'a.safetensors'", "does not contain");
    }

    [Fact]
    public void Tensor_in_two_shards()
    {
        SafetensorsWriter.Write(Path.Combine(_dir.Path, "a.safetensors"), [T("x", 1), T("dup", 2)], null);
        SafetensorsWriter.Write(Path.Combine(_dir.Path, "b.safetensors"), [T("y", 1), T("dup", 2)], null);
        WriteIndex("""{"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}""");
        Fails("'dup'", "a.safetensors", "b.safetensors", "both");
    }

    [Fact]
    public void Tensor_listed_twice_in_the_index()
    {
        SafetensorsWriter.Write(Path.Combine(_dir.Path, "a.safetensors"), [T("x", 1)], null);
        WriteIndex("""{"weight_map":{"x":"a.safetensors","x":"a.safetensors"}}""");
        Fails("'x'", "twice");
    }

    [Theory]
    [InlineData("{\"weight_map\":")]
    [InlineData("{\"metadata\":{}}")]
    [InlineData("{\"weight_map\":{\"x\":3}}")]
    [InlineData("{\"weight_map\":{\"x\":\"../a.safetensors\"}}")]
    [InlineData("{\"weight_map\":{}}")]
    public void Malformed_index(string json)
    {
        WriteIndex(json);
        Fails("model.safetensors.index.json", "corrupt");
    }

    [Fact]
    public void Corrupt_shard_error_names_the_shard()
    {
        SafetensorsWriter.WriteSharded(_dir.Path, [T("x", 4), T("y", 4)], maxShardBytes: 16);
        string second = Path.Combine(_dir.Path, "model-00002-of-00002.safetensors");
        var bytes = File.ReadAllBytes(second);
        File.WriteAllBytes(second, bytes[..^4]);
        Fails("model-00002-of-00002.safetensors", "'y'");
    }
}
