using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Model;

public sealed partial record LlamaConfig
{
    /// <summary>Name of the untied output projection.</summary>
    public const string LmHeadName = "lm_head.weight";

    /// <summary>
    /// Every weight tensor this configuration needs, in Hugging Face naming and [out, in] shape order:
    /// the embedding, per layer the two norms and the seven projections, the final norm, and lm_head.weight
    /// only when the embeddings are not tied.
    /// </summary>
    public IReadOnlyList<(string Name, long[] Shape)> ExpectedTensors()
    {
        long h = HiddenSize, inter = IntermediateSize, q = QDim, kv = KvDim, v = VocabSize;
        var list = new List<(string, long[])>(2 + 9 * NumHiddenLayers + 2)
        {
            ("model.embed_tokens.weight", [v, h]),
        };
        for (int l = 0; l < NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            list.Add((p + "input_layernorm.weight", [h]));
            list.Add((p + "self_attn.q_proj.weight", [q, h]));
            list.Add((p + "self_attn.k_proj.weight", [kv, h]));
            list.Add((p + "self_attn.v_proj.weight", [kv, h]));
            list.Add((p + "self_attn.o_proj.weight", [h, q]));
            list.Add((p + "post_attention_layernorm.weight", [h]));
            list.Add((p + "mlp.gate_proj.weight", [inter, h]));
            list.Add((p + "mlp.up_proj.weight", [inter, h]));
            list.Add((p + "mlp.down_proj.weight", [h, inter]));
        }
        list.Add(("model.norm.weight", [h]));
        if (!TieWordEmbeddings) list.Add((LmHeadName, [v, h]));
        return list;
    }

    /// <summary>Number of parameters, each stored tensor counted once (a tied embedding is not counted twice).</summary>
    public long ParameterCount()
    {
        long total = 0;
        foreach (var (_, shape) in ExpectedTensors())
        {
            long n = 1;
            foreach (var d in shape) n = checked(n * d);
            total = checked(total + n);
        }
        return total;
    }

    /// <summary>
    /// Checks a checkpoint's tensors against a configuration before anything is uploaded: every expected
    /// tensor present with the expected shape and a readable dtype (BF16, F16, F32), and lm_head.weight
    /// present exactly when the embeddings are untied.
    /// </summary>
    /// <returns>Warnings about tensors the model will not use (RoPE inv_freq buffers are silently ignored).</returns>
    /// <exception cref="ModelConfigException">
    /// Any mismatch; the message names <paramref name="modelDir"/>, the first problem and how many more there are,
    /// and <see cref="ModelConfigException.Problems"/> lists them all.
    /// </exception>
    public static IReadOnlyList<string> ValidateWeights(LlamaConfig config, IReadOnlyDictionary<string, TensorInfo> tensors, string modelDir)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(modelDir);

        var problems = new List<string>();
        var expected = config.ExpectedTensors();
        var expectedNames = new HashSet<string>(expected.Select(e => e.Name), StringComparer.Ordinal);

        foreach (var (name, shape) in expected)
        {
            if (!tensors.TryGetValue(name, out var t))
            {
                string why = name == LmHeadName
                    ? " (tie_word_embeddings is false, so the output projection must be stored; set it to true in config.json if this checkpoint ties it to the embedding)"
                    : "";
                problems.Add($"{modelDir}: tensor '{name}' {TensorInfo.FormatShape(shape)} is missing from the weights{why}");
                continue;
            }
            if (!t.Shape.SequenceEqual(shape))
            {
                problems.Add(
                    $"{modelDir}: tensor '{name}' has shape {t.ShapeText} but config.json implies {TensorInfo.FormatShape(shape)}; the config and weights are from different models");
            }
            if (t.DType == SafetensorsDType.Other)
            {
                problems.Add($"{modelDir}: tensor '{name}' has dtype {t.DTypeName}, which this engine cannot load (supported: BF16, F16, F32)");
            }
        }

        if (config.TieWordEmbeddings && tensors.ContainsKey(LmHeadName))
        {
            problems.Add(
                $"{modelDir}: tensor '{LmHeadName}' is present but tie_word_embeddings is true; set tie_word_embeddings to false in config.json (or remove the tensor) so it is not silently ignored");
        }

        var warnings = new List<string>();
        foreach (var (name, t) in tensors)
        {
            if (expectedNames.Contains(name) || name == LmHeadName) continue;
            // Older exports saved the RoPE table as a buffer; it is recomputed from the config, so it is not news.
            if (name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) continue;
            warnings.Add($"{modelDir}: tensor '{name}' {t.ShapeText} is not part of a Llama model with this config and will be ignored");
        }

        if (problems.Count > 0)
        {
            string message = problems.Count == 1
                ? problems[0]
                : $"{problems[0]} (and {problems.Count - 1} more problem{(problems.Count == 2 ? "" : "s")})";
            throw new ModelConfigException(message, problems);
        }
        return warnings;
    }
}
