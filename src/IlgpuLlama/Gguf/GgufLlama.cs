using IlgpuLlama.Kernels;
using IlgpuLlama.Model;

namespace IlgpuLlama.Gguf;

/// <summary>
/// A Llama model as llama.cpp's converter writes it to GGUF: the <c>llama.*</c> metadata as a
/// <see cref="LlamaConfig"/>, the GGUF tensor names as the Hugging Face names the engine uses, and the
/// row order of <c>attn_q</c>/<c>attn_k</c>, which the converter permutes for ggml's RoPE.
/// </summary>
/// <remarks>
/// llama.cpp rotates adjacent pairs (x[2i], x[2i+1]); Hugging Face and this engine rotate halves
/// (x[i], x[i + d/2]). convert_hf_to_gguf.py therefore reorders the rows of each head of q and k from
/// [2, d/2] to [d/2, 2]; <see cref="SourceRow(long, int)"/> reads them back in Hugging Face's order. It is a row
/// reorder, so it works for block formats unchanged.
/// </remarks>
public static class GgufLlama
{
    const string Arch = "llama";

    /// <summary>The GGUF name of an engine (Hugging Face) tensor name.</summary>
    public static string GgufName(string hfName)
    {
        switch (hfName)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case LlamaConfig.LmHeadName: return "output.weight";
        }
        const string layers = "model.layers.";
        if (hfName.StartsWith(layers, StringComparison.Ordinal))
        {
            int dot = hfName.IndexOf('.', layers.Length);
            string layer = hfName[layers.Length..dot], rest = hfName[(dot + 1)..];
            string part = rest switch
            {
                "input_layernorm.weight" => "attn_norm",
                "self_attn.q_proj.weight" => "attn_q",
                "self_attn.k_proj.weight" => "attn_k",
                "self_attn.v_proj.weight" => "attn_v",
                "self_attn.o_proj.weight" => "attn_output",
                "post_attention_layernorm.weight" => "ffn_norm",
                "mlp.gate_proj.weight" => "ffn_gate",
                "mlp.up_proj.weight" => "ffn_up",
                "mlp.down_proj.weight" => "ffn_down",
                _ => throw new ArgumentException($"no GGUF name for '{hfName}'", nameof(hfName)),
            };
            return $"blk.{layer}.{part}.weight";
        }
        throw new ArgumentException($"no GGUF name for '{hfName}'", nameof(hfName));
    }

    /// <summary>The tensor holding Llama 3.1+ RoPE frequency factors.</summary>
    public const string RopeFreqsName = "rope_freqs.weight";

    /// <summary>
    /// For a tensor whose rows llama.cpp permuted (q with the query heads, k with the kv heads), the
    /// GGUF row that holds Hugging Face row <paramref name="row"/>; other tensors: the row itself.
    /// </summary>
    public static long SourceRow(string hfName, long row, int headDim) =>
        IsPermuted(hfName) ? SourceRow(row, headDim) : row;

    /// <summary>Hugging Face row h*d + j*d/2 + i is GGUF row h*d + 2i + j (the converter's permute, undone).</summary>
    public static long SourceRow(long row, int headDim)
    {
        long head = row / headDim;
        int within = (int)(row % headDim), half = headDim / 2;
        int j = within / half, i = within % half;
        return head * headDim + 2 * i + j;
    }

    /// <summary>True for the tensors whose rows the converter permuted.</summary>
    public static bool IsPermuted(string hfName) =>
        hfName.EndsWith(".self_attn.q_proj.weight", StringComparison.Ordinal) || hfName.EndsWith(".self_attn.k_proj.weight", StringComparison.Ordinal);

    /// <summary>
    /// The model configuration from the <c>llama.*</c> metadata (and <c>rope_freqs.weight</c>), validated;
    /// a model that is not a Llama is refused with one line naming its architecture.
    /// </summary>
    public static LlamaConfig ReadConfig(GgufModel model)
    {
        var f = model.Head;
        string path = model.FilePath;
        string arch = f.GetString("general.architecture")
            ?? throw new GgufException($"{path}: metadata key 'general.architecture' is missing, so the model type is unknown; the file is not a complete GGUF model — download it again");
        if (arch != Arch)
            throw new GgufException($"{path}: the model's architecture is '{arch}' (general.architecture); this engine runs Llama models only (llama)");

        int Int(string key, int? fallback = null)
        {
            long? v = f.GetInteger($"{Arch}.{key}");
            if (v is null)
                return fallback ?? throw new GgufException($"{path}: metadata key '{Arch}.{key}' is missing; the file is not a complete Llama GGUF — download it again");
            if (v is <= 0 or > int.MaxValue)
                throw new GgufException($"{path}: metadata key '{Arch}.{key}' is {v}, not a positive size; the file is corrupt — download it again");
            return (int)v;
        }

        int hidden = Int("embedding_length"), heads = Int("attention.head_count");
        int headDim = Int("attention.key_length", f.GetInteger($"{Arch}.rope.dimension_count") is long rd and > 0 and <= int.MaxValue ? (int)rd : hidden / Math.Max(1, heads));
        if (f.GetInteger($"{Arch}.attention.value_length") is long vl && vl != headDim)
            throw new GgufException($"{path}: key length {headDim} and value length {vl} differ; Llama models have one head size — the file is not a Llama model");
        if (f.GetInteger($"{Arch}.rope.dimension_count") is long dims && dims != headDim)
            throw new GgufException($"{path}: RoPE rotates {dims} of {headDim} dimensions per head ('{Arch}.rope.dimension_count'); Llama rotates all of them — the file is not a Llama model");
        string? scaling = f.GetString($"{Arch}.rope.scaling.type");
        if (scaling is not null and not "none")
            throw new GgufException($"{path}: RoPE scaling '{scaling}' ('{Arch}.rope.scaling.type') is not supported; Llama 3 models carry their scaling in {RopeFreqsName}");

        var tokens = f.GetArray<string>("tokenizer.ggml.tokens", GgufValueType.String);
        int vocab = Int("vocab_size", tokens?.Length ?? (model.Tensors.TryGetValue("token_embd.weight", out var emb) && emb.Dims.Count == 2 ? (int)emb.Dims[1] : null));
        var eos = new List<int>();
        foreach (string key in new[] { "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eom_token_id", "tokenizer.ggml.eot_token_id" })
        {
            if (f.GetInteger(key) is long id && !eos.Contains((int)id))
                eos.Add(checked((int)id));
        }

        double[]? factors = null;
        if (model.Tensors.TryGetValue(RopeFreqsName, out var freqs))
        {
            if (freqs.Type != GgmlType.F32 || freqs.Dims.Count != 1)
                throw new GgufException($"{path}: tensor '{RopeFreqsName}' is {freqs.Description}, expected F32 [{headDim / 2}]; the file is corrupt — download it again");
            var bytes = model.GetSpan(freqs, 0, checked((int)freqs.ByteLength));
            factors = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray().Select(x => (double)x).ToArray();
        }

        string dtype = model.Tensors.TryGetValue("token_embd.weight", out var embd) ? embd.Type switch
        {
            GgmlType.F32 => "float32",
            GgmlType.BF16 => "bfloat16",
            _ => "float16",
        } : "float16";
        var config = new LlamaConfig
        {
            HiddenSize = hidden,
            IntermediateSize = Int("feed_forward_length"),
            NumHiddenLayers = Int("block_count"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = Int("attention.head_count_kv", heads),
            HeadDim = headDim,
            VocabSize = vocab,
            RmsNormEps = f.GetNumber($"{Arch}.attention.layer_norm_rms_epsilon")
                ?? throw new GgufException($"{path}: metadata key '{Arch}.attention.layer_norm_rms_epsilon' is missing; the file is not a complete Llama GGUF — download it again"),
            RopeTheta = f.GetNumber($"{Arch}.rope.freq_base") ?? 10000.0,
            RopeFrequencyFactors = factors,
            TieWordEmbeddings = !model.Tensors.ContainsKey("output.weight"),
            BosTokenId = f.GetInteger("tokenizer.ggml.bos_token_id") is long bos ? checked((int)bos) : null,
            EosTokenIds = eos,
            MaxPositionEmbeddings = Int("context_length"),
            TorchDtype = dtype,
        };
        try
        {
            config.Validate(path);
        }
        catch (ModelConfigException e)
        {
            throw new GgufException(e.Message, e);
        }
        return config;
    }

    /// <summary>
    /// Checks that the file holds every tensor of <paramref name="config"/> with the right shape and a
    /// type this engine reads; returns warnings for tensors it does not use.
    /// </summary>
    public static List<string> ValidateTensors(GgufModel model, LlamaConfig config)
    {
        var used = new HashSet<string>(StringComparer.Ordinal) { RopeFreqsName };
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var t = Tensor(model, name);
            used.Add(t.Name);
            if (!t.Shape.SequenceEqual(shape))
                throw new GgufException($"{model.FilePath}: tensor '{t.Name}' is {t.Description}, but the metadata implies [{string.Join(", ", shape.Reverse())}] (ggml order); the file is corrupt or not a Llama model");
            bool vector = shape.Length == 1;
            if (vector ? t.Type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16) : !GgmlTypes.Readable.Contains(t.Type))
                throw new GgufException($"{model.FilePath}: tensor '{t.Name}' is {GgmlTypes.Name(t.Type)}, which this engine does not read " +
                    $"(it reads {string.Join(", ", (vector ? [GgmlType.F32, GgmlType.F16, GgmlType.BF16] : GgmlTypes.Readable).Select(GgmlTypes.Name))}); use a Q4_K_M, Q8_0 or F16 file of the model");
        }
        var unused = model.Tensors.Keys.Where(n => !used.Contains(n)).ToList();
        return unused.Count == 0 ? [] : [$"{model.FilePath}: {unused.Count} tensor(s) not used by a Llama model, ignored: {string.Join(", ", unused.Take(5))}{(unused.Count > 5 ? ", ..." : "")}"];
    }

    /// <summary>The GGUF tensor behind an engine tensor name, or a one-line error naming both.</summary>
    public static GgufTensor Tensor(GgufModel model, string hfName)
    {
        string name = GgufName(hfName);
        return model.Tensors.TryGetValue(name, out var t) ? t
            : throw new GgufException($"{model.FilePath}: tensor '{name}' ({hfName}) is missing; the file is not a complete Llama model — download it again");
    }

    /// <summary>
    /// The device formats a GGUF model loads in by default: each matrix in the device format of its own
    /// ggml type (F16 and F32 as fp16, BF16 as bf16 when every matrix is BF16, else fp16; Q8_0, Q4_0,
    /// Q4_K, Q5_K, Q6_K block for block), so a Q4_K_M file keeps its mix. Two matrices that one fused
    /// kernel reads together (q and k; gate and up) share the format of the two with more bits.
    /// </summary>
    public static WeightLayout DefaultLayout(GgufModel model, LlamaConfig config)
    {
        var matrices = config.ExpectedTensors().Where(t => t.Shape.Length == 2).Select(t => t.Name).ToList();
        var types = matrices.ToDictionary(n => n, n => Tensor(model, n).Type);
        bool allBf16 = types.Values.All(t => t == GgmlType.BF16);
        WeightFormat Own(GgmlType type) => type switch
        {
            GgmlType.F16 or GgmlType.F32 => WeightFormat.Fp16,
            GgmlType.BF16 => allBf16 ? WeightFormat.Bf16 : WeightFormat.Fp16,
            _ => WeightFormat.All.OfType<BlockQuantFormat>().First(f => GgufRows.BlockType(f) == type),
        };
        var formats = types.ToDictionary(kv => kv.Key, kv => Own(kv.Value), StringComparer.Ordinal);
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            foreach (var (a, b) in new[] { ("self_attn.q_proj.weight", "self_attn.k_proj.weight"), ("mlp.gate_proj.weight", "mlp.up_proj.weight") })
            {
                var wider = formats[p + a].BitsPerWeight >= formats[p + b].BitsPerWeight ? formats[p + a] : formats[p + b];
                formats[p + a] = formats[p + b] = wider;
            }
        }
        var main = formats.Values.GroupBy(f => f).OrderByDescending(g => g.Count()).First().Key;
        return new WeightLayout(main, formats);
    }

    /// <summary>The matrices' ggml types and how many tensors have each, for the load line ("Q4_K x 97, Q6_K x 17").</summary>
    public static string TypeMix(GgufModel model, LlamaConfig config) => string.Join(", ",
        config.ExpectedTensors().Where(t => t.Shape.Length == 2).GroupBy(t => Tensor(model, t.Name).Type)
            .OrderByDescending(g => g.Count()).Select(g => $"{GgmlTypes.Name(g.Key)} x {g.Count()}"));

    /// <summary>True when a chat template is Llama 3's (header ids and end-of-turn), the only one the engine formats.</summary>
    public static bool IsLlama3Template(string template) =>
        template.Contains("<|start_header_id|>", StringComparison.Ordinal) && template.Contains("<|eot_id|>", StringComparison.Ordinal);
}
