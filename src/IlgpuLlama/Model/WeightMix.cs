using IlgpuLlama.Kernels;

namespace IlgpuLlama.Model;

/// <summary>
/// One of llama.cpp's K-quant mixes as a rule from tensor to format: <c>q4_k_m</c> and <c>q5_k_m</c>
/// store most matrices in Q4_K or Q5_K and give more bits (Q6_K) to the output layer and to the
/// attn_v and ffn_down of the layers <see cref="UseMoreBits"/> picks, as llama.cpp's
/// <c>llama_tensor_get_type</c> does for a Llama model (src/llama-quant.cpp). A matrix whose input
/// length is not a whole number of 256-weight super-blocks falls back to Q8_0 (llama.cpp falls back
/// to Q5_0 or Q5_1 there, formats this engine does not have).
/// </summary>
/// <param name="Name">the name on the command line and in config.json</param>
/// <param name="Description">one line for help texts</param>
/// <param name="Main">the format of most matrices</param>
public sealed record WeightMix(string Name, string Description, BlockQuantFormat Main)
{
    /// <summary>The format of the matrices that get more bits.</summary>
    public static BlockQuantFormat More => WeightFormat.Q6_K;

    /// <summary>llama.cpp's Q4_K_M: Q4_K, with Q6_K for the output and half of attn_v and ffn_down.</summary>
    public static WeightMix Q4_K_M { get; } = new("q4_k_m", "llama.cpp's Q4_K_M: q4_k, with q6_k for the output and for attn_v and ffn_down of the first, last and every third layer (about 4.9 bits per weight)", WeightFormat.Q4_K);

    /// <summary>llama.cpp's Q5_K_M: Q5_K, with Q6_K for the output and half of attn_v and ffn_down.</summary>
    public static WeightMix Q5_K_M { get; } = new("q5_k_m", "llama.cpp's Q5_K_M: q5_k, with q6_k for the output and for attn_v and ffn_down of the first, last and every third layer (about 5.7 bits per weight)", WeightFormat.Q5_K);

    /// <summary>Every mix.</summary>
    public static IReadOnlyList<WeightMix> All { get; } = [Q4_K_M, Q5_K_M];

    /// <summary>The mix named <paramref name="name"/> (case-insensitive), or null.</summary>
    public static WeightMix? Find(string name) => All.FirstOrDefault(m => string.Equals(m.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// llama.cpp's choice of the layers whose attn_v and ffn_down get more bits: the first and last
    /// eighth of the layers, and every third layer in between.
    /// </summary>
    public static bool UseMoreBits(int layer, int layers) => layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;

    /// <summary>The format of each matrix of <paramref name="config"/> under this mix.</summary>
    public WeightLayout Layout(LlamaConfig config)
    {
        var formats = new Dictionary<string, WeightFormat>(StringComparer.Ordinal);
        // The output layer (the embedding when tied, which is then the same tensor) gets more bits.
        string output = config.TieWordEmbeddings ? "model.embed_tokens.weight" : LlamaConfig.LmHeadName;
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            if (shape.Length != 2)
                continue;
            WeightFormat f = Main;
            if (name == output || name == LlamaConfig.LmHeadName)
                f = More;
            else if (LayerOf(name) is int layer && UseMoreBits(layer, config.NumHiddenLayers)
                && (name.EndsWith(".self_attn.v_proj.weight", StringComparison.Ordinal) || name.EndsWith(".mlp.down_proj.weight", StringComparison.Ordinal)))
                f = More;
            if (shape[1] % f.BlockSize != 0)
                f = WeightFormat.Q8_0;
            formats[name] = f;
        }
        return new WeightLayout(Main, formats);
    }

    static int? LayerOf(string name)
    {
        const string prefix = "model.layers.";
        if (!name.StartsWith(prefix, StringComparison.Ordinal))
            return null;
        int dot = name.IndexOf('.', prefix.Length);
        return int.TryParse(name.AsSpan(prefix.Length, dot - prefix.Length), out int layer) ? layer : null;
    }

    /// <inheritdoc/>
    public override string ToString() => Name;
}
