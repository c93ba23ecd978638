using IlgpuLlama.Model;
using IlgpuLlama.Tests.Safetensors;

namespace IlgpuLlama.Tests.Config;

public sealed class LlamaConfigTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string GoldenConfigPath => Path.Combine(Fixtures.TinyLlamaDir, "config.json");

    private const string Minimal = """
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 100, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
         "model_type": "llama", "eos_token_id": 2, "bos_token_id": 1 %EXTRA%}
        """;

    private static string With(string extra) => Minimal.Replace("%EXTRA%", extra);

    private static ModelConfigException Fails(string json, params string[] mentions)
    {
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.FromJson(json, "my/config.json"));
        Assert.Contains("my/config.json", ex.Message);
        foreach (var m in mentions) Assert.Contains(m, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        return ex;
    }

    [Fact]
    public void Golden_config_loads()
    {
        var c = LlamaConfig.FromFile(GoldenConfigPath);
        Assert.Equal(128, c.HiddenSize);
        Assert.Equal(344, c.IntermediateSize);
        Assert.Equal(2, c.NumHiddenLayers);
        Assert.Equal(8, c.NumAttentionHeads);
        Assert.Equal(2, c.NumKeyValueHeads);
        Assert.Equal(16, c.HeadDim);
        Assert.Equal(512, c.VocabSize);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal([2], c.EosTokenIds);
        Assert.Equal(1, c.BosTokenId);
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(new RopeScaling("llama3", 32.0, 1.0, 4.0, 64), c.RopeScaling);
        Assert.Equal(2048, c.MaxPositionEmbeddings);
        Assert.Equal("bfloat16", c.TorchDtype);
        Assert.Equal(32, c.KvDim);
        Assert.Equal(128, c.QDim);
        Assert.Equal(4, c.KvGroupSize);
        Assert.Equal(c, LlamaConfig.FromDirectory(Fixtures.TinyLlamaDir));
    }

    [Fact]
    public void Generation_config_eos_ids_are_merged()
    {
        File.WriteAllText(_dir.File("config.json"), With(""));
        File.WriteAllText(_dir.File("generation_config.json"), """{"bos_token_id": 1, "eos_token_id": [5, 2, 7], "do_sample": true}""");
        var c = LlamaConfig.FromDirectory(_dir.Path);
        Assert.Equal([2, 5, 7], c.EosTokenIds);

        File.WriteAllText(_dir.File("generation_config.json"), """{"eos_token_id": 500}""");
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.FromDirectory(_dir.Path));
        Assert.Contains("generation_config.json", ex.Message);
        Assert.Contains("eos_token_id", ex.Message);
    }

    [Fact]
    public void Missing_config_json_says_how_to_get_it()
    {
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.FromDirectory(_dir.Path));
        Assert.Contains(_dir.Path, ex.Message);
        Assert.Contains("no config.json", ex.Message);
        Assert.Contains("download", ex.Message);
    }

    [Fact]
    public void Optional_keys_take_Hugging_Face_defaults()
    {
        var c = LlamaConfig.FromJson("""{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 100}""", "x");
        Assert.Equal(16, c.HeadDim);
        Assert.Equal(4, c.NumKeyValueHeads);
        Assert.Equal(1e-6, c.RmsNormEps);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Null(c.RopeScaling);
        Assert.False(c.TieWordEmbeddings);
        Assert.Null(c.BosTokenId);
        Assert.Empty(c.EosTokenIds);
        Assert.Equal(2048, c.MaxPositionEmbeddings);
    }

    [Fact]
    public void Eos_may_be_an_int_a_list_or_null()
    {
        Assert.Equal([2], LlamaConfig.FromJson(With(""), "x").EosTokenIds);
        Assert.Equal([3, 4], LlamaConfig.FromJson(With(""", "eos_token_id": [3, 4]""").Replace("\"eos_token_id\": 2,", ""), "x").EosTokenIds);
        Assert.Empty(LlamaConfig.FromJson(With("").Replace("\"eos_token_id\": 2", "\"eos_token_id\": null"), "x").EosTokenIds);
        Fails(With("").Replace("\"eos_token_id\": 2", "\"eos_token_id\": \"2\""), "'eos_token_id'");
    }

    [Theory]
    [InlineData("\"rope_type\": \"llama3\"")]
    [InlineData("\"type\": \"llama3\"")]
    public void Llama3_rope_scaling_accepts_type_or_rope_type(string typeKey)
    {
        var c = LlamaConfig.FromJson(With($$""", "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, {{typeKey}}}"""), "x");
        Assert.Equal(new RopeScaling("llama3", 8, 1, 4, 8192), c.RopeScaling);
    }

    [Fact]
    public void Default_rope_type_means_no_scaling_and_v5_rope_parameters_are_read()
    {
        Assert.Null(LlamaConfig.FromJson(With(""", "rope_scaling": {"rope_type": "default"}"""), "x").RopeScaling);
        Assert.Null(LlamaConfig.FromJson(With(""", "rope_scaling": null"""), "x").RopeScaling);

        string v5 = With(""", "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}""")
            .Replace("\"rope_theta\": 10000.0,", "");
        var c = LlamaConfig.FromJson(v5, "x");
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(new RopeScaling("llama3", 32, 1, 4, 8192), c.RopeScaling);
    }

    [Theory]
    [InlineData("linear")]
    [InlineData("dynamic")]
    [InlineData("yarn")]
    [InlineData("longrope")]
    public void Other_rope_types_are_rejected(string type) =>
        Fails(With($$""", "rope_scaling": {"rope_type": "{{type}}", "factor": 2.0}"""), "rope_type", $"'{type}'", "not supported");

    [Fact]
    public void Llama3_rope_scaling_with_missing_factor_names_the_key() =>
        Fails(With(""", "rope_scaling": {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0}"""), "'rope_scaling.factor'");

    [Fact]
    public void Invalid_configs_fail_with_the_file_and_key()
    {
        Fails(Minimal.Replace("\"hidden_size\": 64,", "").Replace("%EXTRA%", ""), "missing required key 'hidden_size'");
        Fails(With("").Replace("\"hidden_size\": 64", "\"hidden_size\": \"64\""), "'hidden_size'", "integer");
        Fails(With("").Replace("\"hidden_size\": 64", "\"hidden_size\": 64.5"), "'hidden_size'", "integer");
        Fails(With("").Replace("\"intermediate_size\": 128", "\"intermediate_size\": 0"), "'intermediate_size'", "positive");
        Fails(With("").Replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"), "'num_attention_heads'", "multiple");
        Fails(With(", \"head_dim\": 15"), "'head_dim'", "even");
        Fails(With("").Replace("\"llama\"", "\"mistral\""), "'model_type'", "'mistral'");
        Fails(With(", \"tie_word_embeddings\": \"yes\""), "'tie_word_embeddings'");
        Fails(With(", \"attention_bias\": true"), "'attention_bias'");
        Fails(With(", \"hidden_act\": \"gelu\""), "'hidden_act'");
        Fails(With("").Replace("\"rms_norm_eps\": 1e-5", "\"rms_norm_eps\": -1"), "'rms_norm_eps'");
        Fails(With("").Replace("\"eos_token_id\": 2", "\"eos_token_id\": 100"), "'eos_token_id'", "vocabulary");
        Fails("{\"hidden_size\": 64,", "not valid JSON");
        Fails("[1]", "object");
    }

    [Fact]
    public void Integral_floats_are_accepted_for_integer_keys() =>
        Assert.Equal(64, LlamaConfig.FromJson(With("").Replace("\"hidden_size\": 64", "\"hidden_size\": 64.0"), "x").HiddenSize);

    [Fact]
    public void Presets_have_the_Hugging_Face_values()
    {
        Assert.Equal(["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"], LlamaConfig.PresetNames);

        var b1 = LlamaConfig.Preset("llama-3.2-1b");
        Assert.Equal((2048, 8192, 16, 32, 8, 64, 128256), (b1.HiddenSize, b1.IntermediateSize, b1.NumHiddenLayers, b1.NumAttentionHeads, b1.NumKeyValueHeads, b1.HeadDim, b1.VocabSize));
        Assert.Equal((1e-5, 500000.0, true, 128000, 131072, "bfloat16"), (b1.RmsNormEps, b1.RopeTheta, b1.TieWordEmbeddings, b1.BosTokenId, b1.MaxPositionEmbeddings, b1.TorchDtype));
        Assert.Equal([128001, 128008, 128009], b1.EosTokenIds);
        Assert.Equal(new RopeScaling("llama3", 32, 1, 4, 8192), b1.RopeScaling);

        var b3 = LlamaConfig.Preset("Llama-3.2-3B");
        Assert.Equal((3072, 8192, 28, 24, 8, 128, true), (b3.HiddenSize, b3.IntermediateSize, b3.NumHiddenLayers, b3.NumAttentionHeads, b3.NumKeyValueHeads, b3.HeadDim, b3.TieWordEmbeddings));
        Assert.Equal(b1.RopeScaling, b3.RopeScaling);

        var b8 = LlamaConfig.Preset("llama-3.1-8b");
        Assert.Equal((4096, 14336, 32, 32, 8, 128, false), (b8.HiddenSize, b8.IntermediateSize, b8.NumHiddenLayers, b8.NumAttentionHeads, b8.NumKeyValueHeads, b8.HeadDim, b8.TieWordEmbeddings));
        Assert.Equal(8.0, b8.RopeScaling!.Factor);
        Assert.Equal([128001, 128008, 128009], b8.EosTokenIds);
    }

    [Theory]
    [InlineData("llama-3.2-1b", 1_235_814_400L)]
    [InlineData("llama-3.2-3b", 3_212_749_824L)]
    [InlineData("llama-3.1-8b", 8_030_261_248L)]
    public void Parameter_counts_match_the_published_models(string preset, long expected) =>
        Assert.Equal(expected, LlamaConfig.Preset(preset).ParameterCount());

    [Fact]
    public void Unknown_preset_lists_the_known_ones()
    {
        var ex = Assert.Throws<ModelConfigException>(() => LlamaConfig.Preset("llama-2-7b"));
        Assert.Contains("'llama-2-7b'", ex.Message);
        foreach (var n in LlamaConfig.PresetNames) Assert.Contains(n, ex.Message);
    }

    [Fact]
    public void ToJson_round_trips_presets_and_the_golden_config()
    {
        foreach (var name in LlamaConfig.PresetNames)
        {
            var c = LlamaConfig.Preset(name);
            Assert.Equal(c, LlamaConfig.FromJson(c.ToJson(), name));
        }
        var golden = LlamaConfig.FromFile(GoldenConfigPath);
        string json = golden.ToJson();
        Assert.Equal(golden, LlamaConfig.FromJson(json, "golden"));
        Assert.Contains("\"rope_theta\": 500000.0", json);
        Assert.Contains("\"rms_norm_eps\": 1e-05", json);
        Assert.Contains("\"eos_token_id\": 2,", json);
        Assert.Contains("\"model_type\": \"llama\"", json);

        var noRope = golden with { RopeScaling = null, EosTokenIds = [], BosTokenId = null };
        Assert.Equal(noRope, LlamaConfig.FromJson(noRope.ToJson(), "x"));
        Assert.NotEqual(golden, noRope);
    }

    [Fact]
    public void Equality_compares_eos_lists_by_value()
    {
        var a = LlamaConfig.Preset("llama-3.2-1b");
        Assert.Equal(a, a with { EosTokenIds = new List<int> { 128001, 128008, 128009 } });
        Assert.NotEqual(a, a with { EosTokenIds = [128001] });
        Assert.Equal(a.GetHashCode(), (a with { EosTokenIds = [128001, 128008, 128009] }).GetHashCode());
    }
}
