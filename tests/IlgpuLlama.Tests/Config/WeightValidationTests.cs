using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Tests.Safetensors;

namespace IlgpuLlama.Tests.Config;

public class WeightValidationTests
{
    private static LlamaConfig Golden => LlamaConfig.FromDirectory(Fixtures.TinyLlamaDir);

    private static Dictionary<string, TensorInfo> GoldenTensors()
    {
        using var model = SafetensorsModel.Open(Fixtures.TinyLlamaDir);
        return model.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value);
    }

    private static TensorInfo Fake(string name, SafetensorsDType dtype, params long[] shape) =>
        new(name, dtype, dtype == SafetensorsDType.Other ? "I64" : dtype.ToName(), shape, 0, 0, "fake.safetensors");

    [Fact]
    public void Expected_tensors_match_the_golden_file_exactly()
    {
        var expected = Golden.ExpectedTensors();
        var actual = GoldenTensors();
        Assert.Equal(20, expected.Count);
        Assert.Equal(actual.Keys.Order(), expected.Select(e => e.Name).Order());
        foreach (var (name, shape) in expected) Assert.Equal(shape, actual[name].Shape);
        Assert.Equal(actual.Values.Sum(t => t.ElementCount), Golden.ParameterCount());
    }

    [Fact]
    public void Golden_weights_pass_without_warnings() =>
        Assert.Empty(LlamaConfig.ValidateWeights(Golden, GoldenTensors(), Fixtures.TinyLlamaDir));

    [Fact]
    public void Missing_tensor_is_named()
    {
        var tensors = GoldenTensors();
        tensors.Remove("model.layers.1.self_attn.v_proj.weight");
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.ValidateWeights(Golden, tensors, "models/tiny"));
        Assert.Contains("models/tiny", ex.Message);
        Assert.Contains("'model.layers.1.self_attn.v_proj.weight'", ex.Message);
        Assert.Contains("missing", ex.Message);
        Assert.Single(ex.Problems);
    }

    [Fact]
    public void Misshaped_tensor_is_named_with_both_shapes()
    {
        var tensors = GoldenTensors();
        tensors["model.layers.0.mlp.down_proj.weight"] = Fake("model.layers.0.mlp.down_proj.weight", SafetensorsDType.BF16, 344, 128);
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.ValidateWeights(Golden, tensors, "models/tiny"));
        Assert.Contains("'model.layers.0.mlp.down_proj.weight'", ex.Message);
        Assert.Contains("[344, 128]", ex.Message);
        Assert.Contains("[128, 344]", ex.Message);
    }

    [Fact]
    public void Config_from_another_model_reports_the_first_problem_and_counts_the_rest()
    {
        var other = Golden with { HiddenSize = 256, HeadDim = 32 };
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.ValidateWeights(other, GoldenTensors(), "models/tiny"));
        Assert.Contains("'model.embed_tokens.weight'", ex.Message);
        Assert.Contains($"and {ex.Problems.Count - 1} more problems", ex.Message);
        Assert.True(ex.Problems.Count > 10);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void Lm_head_must_be_absent_exactly_when_tied()
    {
        var tensors = GoldenTensors();
        tensors["lm_head.weight"] = Fake("lm_head.weight", SafetensorsDType.BF16, 512, 128);
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.ValidateWeights(Golden, tensors, "d"));
        Assert.Contains("'lm_head.weight'", ex.Message);
        Assert.Contains("tie_word_embeddings is true", ex.Message);

        var untied = Golden with { TieWordEmbeddings = false };
        Assert.Empty(LlamaConfig.ValidateWeights(untied, tensors, "d"));
        tensors.Remove("lm_head.weight");
        ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.ValidateWeights(untied, tensors, "d"));
        Assert.Contains("'lm_head.weight'", ex.Message);
        Assert.Contains("tie_word_embeddings is false", ex.Message);
    }

    [Fact]
    public void Unsupported_dtype_is_an_error()
    {
        var tensors = GoldenTensors();
        tensors["model.norm.weight"] = Fake("model.norm.weight", SafetensorsDType.Other, 128);
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.ValidateWeights(Golden, tensors, "d"));
        Assert.Contains("'model.norm.weight'", ex.Message);
        Assert.Contains("I64", ex.Message);
    }

    [Fact]
    public void Extra_tensors_warn_but_rotary_buffers_are_ignored()
    {
        var tensors = GoldenTensors();
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = Fake("model.layers.0.self_attn.rotary_emb.inv_freq", SafetensorsDType.F32, 8);
        tensors["model.layers.0.self_attn.q_proj.bias"] = Fake("model.layers.0.self_attn.q_proj.bias", SafetensorsDType.F32, 128);
        var warnings = LlamaConfig.ValidateWeights(Golden, tensors, "d");
        var w = Assert.Single(warnings);
        Assert.Contains("'model.layers.0.self_attn.q_proj.bias'", w);
    }

    [Fact]
    public void Expected_tensors_for_8b_include_lm_head_and_gqa_shapes()
    {
        var c = LlamaConfig.Preset("llama-3.1-8b");
        var e = c.ExpectedTensors().ToDictionary(x => x.Name, x => x.Shape);
        Assert.Equal(2 + 9 * 32 + 1, e.Count);
        Assert.Equal([128256L, 4096], e["lm_head.weight"]);
        Assert.Equal([1024L, 4096], e["model.layers.31.self_attn.k_proj.weight"]);
        Assert.Equal([4096L, 4096], e["model.layers.0.self_attn.o_proj.weight"]);
        Assert.Equal([4096L, 14336], e["model.layers.0.mlp.down_proj.weight"]);
        Assert.DoesNotContain(LlamaConfig.Preset("llama-3.2-1b").ExpectedTensors(), x => x.Name == "lm_head.weight");
    }
}
