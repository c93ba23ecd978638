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

    /// <summary>
    /// Every tensor a checkpoint of this configuration stores, with its stored shape and the dtypes it
    /// may have: the <see cref="ExpectedTensors"/> as BF16/F16/F32; in a quantised checkpoint each matrix
    /// as its quants (I8 [rows, in] for Q8_0, U8 [rows, in / 2] for Q4_0) plus "name.scales" (F16 [rows, in / 32]),
    /// and the norms as F16.
    /// </summary>
    public IReadOnlyList<(string Name, long[] Shape, SafetensorsDType[] DTypes)> StoredTensors()
    {
        SafetensorsDType[] values = [SafetensorsDType.BF16, SafetensorsDType.F16, SafetensorsDType.F32];
        if (StoredLayout is not { } layout)
            return ExpectedTensors().Select(t => (t.Name, t.Shape, values)).ToList();
        var list = new List<(string, long[], SafetensorsDType[])>();
        foreach (var (name, shape) in ExpectedTensors())
        {
            if (shape.Length == 1)
            {
                list.Add((name, shape, [SafetensorsDType.F16]));
                continue;
            }
            var q = (Kernels.BlockQuantFormat)layout.For(name);
            list.Add((name, [shape[0], q.RowQuantBytes(shape[1])], [q.SignedQuants ? SafetensorsDType.I8 : SafetensorsDType.U8]));
            list.Add((name + Kernels.BlockQuantFormat.ScalesSuffix, [shape[0], q.RowSideWords(shape[1])], [SafetensorsDType.F16]));
        }
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

        // Before listing what a config expects (9 tensors a layer): num_hidden_layers 1000000 against
        // 2-layer weights listed 9 million missing tensors, taking half a minute to say so.
        int stored = StoredLayerCount(tensors.Keys);
        if (config.NumHiddenLayers > stored)
        {
            throw new ModelConfigException(
                $"{modelDir}: config.json says num_hidden_layers {config.NumHiddenLayers:N0} but the weights hold {stored:N0} layer{(stored == 1 ? "" : "s")}" +
                (stored > 0 ? $" (model.layers.0 to model.layers.{stored - 1})" : "") + "; the config and weights are from different models: fix num_hidden_layers or use the matching weights");
        }

        var problems = new List<string>();
        var expected = config.StoredTensors();
        var expectedNames = new HashSet<string>(expected.Select(e => e.Name), StringComparer.Ordinal);
        if (config.StoredLayout is { } layout)
        {
            foreach (var (name, shape) in config.ExpectedTensors())
            {
                var quant = layout.For(name);
                if (shape.Length == 2 && shape[1] % quant.BlockSize != 0)
                    problems.Add($"{modelDir}: tensor '{name}' has {shape[1]} inputs per row, not a multiple of {quant.BlockSize}; config.json says the checkpoint is {quant.Name}, so it is corrupt");
            }
        }

        foreach (var (name, shape, dtypes) in expected)
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
            if (!dtypes.Contains(t.DType))
            {
                string allowed = string.Join(", ", dtypes.Select(d => d.ToName()));
                problems.Add(config.Quantization is { } q
                    ? $"{modelDir}: tensor '{name}' has dtype {t.DTypeName}, but a {q.Name} checkpoint stores it as {allowed}; re-run ilgpu-llama quantize on the original model"
                    : $"{modelDir}: tensor '{name}' has dtype {t.DTypeName}, which this engine cannot load (supported: {allowed})");
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

    /// <summary>Layers stored: the number of consecutive indexes i from 0 with some tensor named model.layers.i.*.</summary>
    static int StoredLayerCount(IEnumerable<string> names)
    {
        const string prefix = "model.layers.";
        var indexes = new HashSet<int>();
        foreach (string name in names)
        {
            if (!name.StartsWith(prefix, StringComparison.Ordinal))
                continue;
            int dot = name.IndexOf('.', prefix.Length);
            if (dot > prefix.Length && int.TryParse(name.AsSpan(prefix.Length, dot - prefix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i))
                indexes.Add(i);
        }
        int count = 0;
        while (indexes.Contains(count))
            count++;
        return count;
    }
}
