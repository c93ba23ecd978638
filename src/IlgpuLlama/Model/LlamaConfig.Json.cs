using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace IlgpuLlama.Model;

public sealed partial record LlamaConfig
{
    /// <summary>File name of the architecture config in a Hugging Face model directory.</summary>
    public const string ConfigFileName = "config.json";

    /// <summary>File name of the optional generation defaults, whose eos_token_id list is often longer.</summary>
    public const string GenerationConfigFileName = "generation_config.json";

    /// <summary>Reads config.json from a model directory and merges in generation_config.json's eos_token_id when present.</summary>
    /// <exception cref="ModelConfigException">The directory or config.json is missing, or either file is invalid.</exception>
    public static LlamaConfig FromDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
            throw new ModelConfigException($"{directory}: model directory does not exist");
        string configPath = Path.Combine(directory, ConfigFileName);
        if (Directory.Exists(configPath))
            throw new ModelConfigException($"{configPath} is a directory, not a file; put the model's {ConfigFileName} there");
        if (!File.Exists(configPath))
        {
            throw new ModelConfigException(
                $"{directory}: no {ConfigFileName}; download a Llama 3 model into it (weights/README.md gives the hf download command)");
        }
        var config = FromFile(configPath);

        string genPath = Path.Combine(directory, GenerationConfigFileName);
        if (!File.Exists(genPath)) return config;
        using var gen = ParseDocument(ReadText(genPath), genPath);
        if (!gen.RootElement.TryGetProperty("eos_token_id", out var eosEl)) return config;
        var extra = ReadTokenIds(eosEl, genPath, "eos_token_id");
        var merged = config.EosTokenIds.Concat(extra).Distinct().ToList();
        var result = config with { EosTokenIds = merged };
        result.Validate(genPath);
        return result;
    }

    /// <summary>Reads and validates one config.json.</summary>
    public static LlamaConfig FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new ModelConfigException($"{path}: file not found");
        return FromJson(ReadText(path), path);
    }

    /// <summary>
    /// Parses Hugging Face config.json text. <paramref name="sourceName"/> (usually the path) starts every error message.
    /// Accepts both the classic "rope_scaling" block and the newer "rope_parameters" one, "type" or "rope_type",
    /// and "torch_dtype" or the newer "dtype".
    /// </summary>
    public static LlamaConfig FromJson(string json, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(sourceName);
        using var doc = ParseDocument(json, sourceName);
        var root = doc.RootElement;
        var r = new Reader(root, sourceName);

        if (r.String("model_type") is { } modelType && modelType != "llama")
            throw new ModelConfigException($"{sourceName}: key 'model_type' is '{modelType}', but only Llama models (\"llama\") are supported");
        if (r.String("hidden_act") is { } act && act != "silu")
            throw new ModelConfigException($"{sourceName}: key 'hidden_act' is '{act}', but Llama's MLP here implements only \"silu\"");
        if (r.Bool("attention_bias") == true)
            throw new ModelConfigException($"{sourceName}: key 'attention_bias' is true, but this engine implements Llama attention without biases");
        if (r.Bool("mlp_bias") == true)
            throw new ModelConfigException($"{sourceName}: key 'mlp_bias' is true, but this engine implements the Llama MLP without biases");

        int hidden = r.RequiredInt("hidden_size");
        int heads = r.RequiredInt("num_attention_heads");
        int maxPos = r.Int("max_position_embeddings") ?? 2048;

        // transformers v5 moved rope_theta and the scaling into "rope_parameters"; read either layout.
        JsonElement ropeBlock = default;
        string ropeKey = "rope_scaling";
        if (root.TryGetProperty("rope_scaling", out var rsEl) && rsEl.ValueKind != JsonValueKind.Null)
        {
            ropeBlock = rsEl;
        }
        else if (root.TryGetProperty("rope_parameters", out var rpEl) && rpEl.ValueKind != JsonValueKind.Null)
        {
            ropeBlock = rpEl;
            ropeKey = "rope_parameters";
        }
        double? theta = r.Double("rope_theta");
        if (theta is null && ropeBlock.ValueKind == JsonValueKind.Object)
            theta = new Reader(ropeBlock, sourceName, ropeKey + ".").Double("rope_theta");

        var eos = root.TryGetProperty("eos_token_id", out var eosEl) ? ReadTokenIds(eosEl, sourceName, "eos_token_id") : [];
        int? bos = r.Int("bos_token_id");

        var config = new LlamaConfig
        {
            HiddenSize = hidden,
            IntermediateSize = r.RequiredInt("intermediate_size"),
            NumHiddenLayers = r.RequiredInt("num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = r.Int("num_key_value_heads") ?? heads,
            HeadDim = r.Int("head_dim") ?? (heads > 0 ? hidden / heads : 0),
            VocabSize = r.RequiredInt("vocab_size"),
            RmsNormEps = r.Double("rms_norm_eps") ?? 1e-6,
            RopeTheta = theta ?? 10000.0,
            RopeScaling = ropeBlock.ValueKind == JsonValueKind.Undefined ? null : ReadRopeScaling(ropeBlock, sourceName, ropeKey, maxPos),
            TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? false,
            BosTokenId = bos,
            EosTokenIds = eos,
            MaxPositionEmbeddings = maxPos,
            TorchDtype = r.String("torch_dtype") ?? r.String("dtype") ?? "float32",
            Quantization = ReadQuantization(root, sourceName, out var mix),
            QuantizationMix = mix,
        };
        if (hidden > 0 && heads > 0 && !root.TryGetProperty("head_dim", out _) && hidden % heads != 0)
        {
            throw new ModelConfigException(
                $"{sourceName}: key 'hidden_size' ({hidden}) is not a multiple of 'num_attention_heads' ({heads}) and there is no 'head_dim' to say the head width");
        }
        config.Validate(sourceName);
        return config;
    }

    /// <summary>The "quantization" entry an ilgpu-llama quantize output carries: {"format": "q8_0", "block_size": 32}.</summary>
    static Kernels.BlockQuantFormat? ReadQuantization(JsonElement root, string sourceName, out WeightMix? mix)
    {
        mix = null;
        if (!root.TryGetProperty("quantization", out var q) || q.ValueKind == JsonValueKind.Null)
            return null;
        if (q.ValueKind != JsonValueKind.Object || !q.TryGetProperty("format", out var f) || f.ValueKind != JsonValueKind.String)
            throw new ModelConfigException($"{sourceName}: key 'quantization' must be an object with a string 'format' (as ilgpu-llama quantize writes it)");
        mix = WeightMix.Find(f.GetString()!);
        var format = mix?.Main ?? Kernels.WeightFormat.Find(f.GetString()!) as Kernels.BlockQuantFormat
            ?? throw new ModelConfigException($"{sourceName}: key 'quantization.format' '{f.GetString()}' is not a block format this engine reads ({string.Join(", ", Kernels.WeightFormat.All.OfType<Kernels.BlockQuantFormat>().Select(x => x.Name).Concat(WeightMix.All.Select(m => m.Name)))})");
        if (q.TryGetProperty("block_size", out var b) && (b.ValueKind != JsonValueKind.Number || !b.TryGetInt32(out int size) || size != format.BlockSize))
            throw new ModelConfigException($"{sourceName}: key 'quantization.block_size' must be {format.BlockSize} for {format.Name}");
        return format;
    }

    /// <summary>
    /// A Hugging Face style config.json for this configuration (used to write model directories, e.g. demos and
    /// tests) that <see cref="FromJson"/> reads back to an equal config. Floats are written the way Python's json does.
    /// </summary>
    public string ToJson()
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("architectures");
            w.WriteStringValue("LlamaForCausalLM");
            w.WriteEndArray();
            w.WriteBoolean("attention_bias", false);
            w.WritePropertyName("attention_dropout");
            w.WriteRawValue(PythonFloat(0.0));
            w.WritePropertyName("bos_token_id");
            if (BosTokenId is int bos) w.WriteNumberValue(bos); else w.WriteNullValue();
            w.WritePropertyName("eos_token_id");
            if (EosTokenIds.Count == 0) w.WriteNullValue();
            else if (EosTokenIds.Count == 1) w.WriteNumberValue(EosTokenIds[0]);
            else
            {
                w.WriteStartArray();
                foreach (var id in EosTokenIds) w.WriteNumberValue(id);
                w.WriteEndArray();
            }
            w.WriteNumber("head_dim", HeadDim);
            w.WriteString("hidden_act", "silu");
            w.WriteNumber("hidden_size", HiddenSize);
            w.WritePropertyName("initializer_range");
            w.WriteRawValue(PythonFloat(0.02));
            w.WriteNumber("intermediate_size", IntermediateSize);
            w.WriteNumber("max_position_embeddings", MaxPositionEmbeddings);
            w.WriteBoolean("mlp_bias", false);
            w.WriteString("model_type", "llama");
            w.WriteNumber("num_attention_heads", NumAttentionHeads);
            w.WriteNumber("num_hidden_layers", NumHiddenLayers);
            w.WriteNumber("num_key_value_heads", NumKeyValueHeads);
            w.WriteNumber("pretraining_tp", 1);
            if (Quantization is { } quant)
            {
                w.WriteStartObject("quantization");
                w.WriteString("format", QuantizationMix?.Name ?? quant.Name);
                w.WriteNumber("block_size", quant.BlockSize);
                w.WriteString("quants", quant.QuantsLayout);
                w.WriteString("scales", QuantizationMix is null && quant.SideWords == 1
                    ? $"F16 [rows, in / {quant.BlockSize}] as NAME{Kernels.BlockQuantFormat.ScalesSuffix}"
                    : $"16-bit side words of each block (fp16 scales; a K-quant's scales, mins and high bits) as NAME{Kernels.BlockQuantFormat.ScalesSuffix}, F16-typed");
                w.WriteString("tool", "ilgpu-llama quantize");
                w.WriteEndObject();
            }
            w.WritePropertyName("rms_norm_eps");
            w.WriteRawValue(PythonFloat(RmsNormEps));
            w.WritePropertyName("rope_scaling");
            if (RopeScaling is { } rs)
            {
                w.WriteStartObject();
                w.WritePropertyName("factor");
                w.WriteRawValue(PythonFloat(rs.Factor));
                w.WritePropertyName("high_freq_factor");
                w.WriteRawValue(PythonFloat(rs.HighFreqFactor));
                w.WritePropertyName("low_freq_factor");
                w.WriteRawValue(PythonFloat(rs.LowFreqFactor));
                w.WriteNumber("original_max_position_embeddings", rs.OriginalMaxPositionEmbeddings);
                w.WriteString("rope_type", rs.RopeType);
                w.WriteEndObject();
            }
            else
            {
                w.WriteNullValue();
            }
            w.WritePropertyName("rope_theta");
            w.WriteRawValue(PythonFloat(RopeTheta));
            w.WriteBoolean("tie_word_embeddings", TieWordEmbeddings);
            w.WriteString("torch_dtype", TorchDtype);
            w.WriteBoolean("use_cache", true);
            w.WriteNumber("vocab_size", VocabSize);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan) + "\n";
    }

    /// <summary>Python's repr for floats: integral values keep ".0", exponents are lower-case ("1e-05").</summary>
    private static string PythonFloat(double value)
    {
        if (!double.IsFinite(value)) throw new InvalidOperationException($"cannot write non-finite value {value} to config.json");
        string s = value.ToString("R", CultureInfo.InvariantCulture);
        if (s.Contains('E')) return s.Replace("E", "e", StringComparison.Ordinal);
        return s.Contains('.') ? s : s + ".0";
    }

    private static string ReadText(string path)
    {
        try
        {
            return IO.InputFile.ReadAllText(path);
        }
        catch (Exception e) when (e is (IOException and not IO.NotARegularFileException) or UnauthorizedAccessException)
        {
            throw new ModelConfigException($"{path}: cannot read the file ({e.Message.ReplaceLineEndings(" ")})", e);
        }
    }

    private static JsonDocument ParseDocument(string json, string sourceName)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new ModelConfigException($"{sourceName}: not valid JSON ({e.Message.ReplaceLineEndings(" ")}); re-download the file", e);
        }
        var kind = doc.RootElement.ValueKind;
        if (kind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw new ModelConfigException($"{sourceName}: the JSON root is {kind}, expected an object");
        }
        return doc;
    }

    private static List<int> ReadTokenIds(JsonElement el, string sourceName, string key)
    {
        var ids = new List<int>();
        switch (el.ValueKind)
        {
            case JsonValueKind.Null:
                break;
            case JsonValueKind.Number:
                ids.Add(Reader.AsInt(el, sourceName, key));
                break;
            case JsonValueKind.Array:
                foreach (var item in el.EnumerateArray()) ids.Add(Reader.AsInt(item, sourceName, key));
                break;
            default:
                throw new ModelConfigException($"{sourceName}: key '{key}' must be an integer or a list of integers, got {Reader.Describe(el)}");
        }
        return ids;
    }

    private static RopeScaling? ReadRopeScaling(JsonElement el, string sourceName, string key, int maxPositionEmbeddings)
    {
        if (el.ValueKind != JsonValueKind.Object)
            throw new ModelConfigException($"{sourceName}: key '{key}' must be an object or null, got {Reader.Describe(el)}");
        var r = new Reader(el, sourceName, key + ".");
        string type = r.String("rope_type") ?? r.String("type") ?? "default";
        switch (type)
        {
            case "default":
                return null;
            case "llama3":
                return new RopeScaling(
                    "llama3",
                    r.RequiredDouble("factor"),
                    r.RequiredDouble("low_freq_factor"),
                    r.RequiredDouble("high_freq_factor"),
                    // Hugging Face falls back to max_position_embeddings when the original length is not given.
                    r.Int("original_max_position_embeddings") ?? maxPositionEmbeddings);
            default:
                throw new ModelConfigException(
                    $"{sourceName}: key '{key}.rope_type' is '{type}', which is not supported (supported: default, llama3); Llama 3.x checkpoints use \"llama3\"");
        }
    }

    /// <summary>Typed access to one JSON object's keys with errors that name the file and the key.</summary>
    private readonly struct Reader(JsonElement obj, string source, string prefix = "")
    {
        private bool TryGet(string key, out JsonElement value) =>
            obj.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

        public int RequiredInt(string key) =>
            TryGet(key, out var v) ? AsInt(v, source, prefix + key) : throw Missing(key);

        public int? Int(string key) => TryGet(key, out var v) ? AsInt(v, source, prefix + key) : null;

        public double RequiredDouble(string key) =>
            TryGet(key, out var v) ? AsDouble(v, prefix + key) : throw Missing(key);

        public double? Double(string key) => TryGet(key, out var v) ? AsDouble(v, prefix + key) : null;

        public bool? Bool(string key)
        {
            if (!TryGet(key, out var v)) return null;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new ModelConfigException($"{source}: key '{prefix}{key}' must be true or false, got {Describe(v)}"),
            };
        }

        public string? String(string key)
        {
            if (!TryGet(key, out var v)) return null;
            return v.ValueKind == JsonValueKind.String
                ? v.GetString()
                : throw new ModelConfigException($"{source}: key '{prefix}{key}' must be a string, got {Describe(v)}");
        }

        private ModelConfigException Missing(string key) =>
            new($"{source}: missing required key '{prefix}{key}'; is this a Hugging Face Llama config.json?");

        private double AsDouble(JsonElement v, string key) =>
            v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d)
                ? d
                : throw new ModelConfigException($"{source}: key '{key}' must be a number, got {Describe(v)}");

        public static int AsInt(JsonElement v, string source, string key)
        {
            if (v.ValueKind == JsonValueKind.Number)
            {
                if (v.TryGetInt32(out int i)) return i;
                // Tolerate integral values written as floats (e.g. 2048.0), which Python tools sometimes emit.
                if (v.TryGetDouble(out double d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue) return (int)d;
            }
            throw new ModelConfigException($"{source}: key '{key}' must be an integer, got {Describe(v)}");
        }

        public static string Describe(JsonElement v)
        {
            string raw = v.GetRawText().ReplaceLineEndings(" ");
            if (raw.Length > 40) raw = raw[..40] + "...";
            return $"{raw} ({v.ValueKind.ToString().ToLowerInvariant()})";
        }
    }
}
