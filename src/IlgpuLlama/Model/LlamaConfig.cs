namespace IlgpuLlama.Model;

/// <summary>
/// The architecture hyper-parameters of a Llama 3.x model, as read from a Hugging Face config.json
/// (<see cref="FromDirectory"/>, <see cref="FromFile"/>, <see cref="FromJson"/>) or taken from a
/// built-in <see cref="Preset"/>. Everything the engine needs to size buffers, check weights and build
/// the RoPE tables is derived from here.
/// </summary>
/// <remarks>
/// Defaults for keys that config.json may omit follow Hugging Face's LlamaConfig. Equality is by value,
/// including <see cref="EosTokenIds"/>, so a config survives <see cref="ToJson"/> → <see cref="FromJson"/> unchanged.
/// </remarks>
public sealed partial record LlamaConfig
{
    private readonly IReadOnlyList<int> _eosTokenIds = new ValueList<int>([]);

    /// <summary>Width of the residual stream ("hidden_size").</summary>
    public int HiddenSize { get; init; }

    /// <summary>Width of the SwiGLU MLP ("intermediate_size").</summary>
    public int IntermediateSize { get; init; }

    /// <summary>Number of transformer blocks ("num_hidden_layers").</summary>
    public int NumHiddenLayers { get; init; }

    /// <summary>Number of query heads ("num_attention_heads").</summary>
    public int NumAttentionHeads { get; init; }

    /// <summary>Number of key/value heads ("num_key_value_heads"); fewer than query heads means grouped-query attention.</summary>
    public int NumKeyValueHeads { get; init; }

    /// <summary>Per-head width ("head_dim"); when config.json omits it, hidden_size / num_attention_heads.</summary>
    public int HeadDim { get; init; }

    /// <summary>Vocabulary size: rows of the embedding and of the output projection.</summary>
    public int VocabSize { get; init; }

    /// <summary>Epsilon inside the RMSNorm square root.</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>RoPE base ("rope_theta").</summary>
    public double RopeTheta { get; init; } = 10000.0;

    /// <summary>Llama 3 frequency scaling, or null for plain RoPE.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary>
    /// Per-pair RoPE frequency divisors (head_dim / 2 values), as a GGUF file stores Llama 3.1+ scaling
    /// in its <c>rope_freqs.weight</c> tensor: pair i turns at inv_freq[i] / factor[i]. Null when the
    /// scaling is given as <see cref="RopeScaling"/> parameters or there is none.
    /// </summary>
    public IReadOnlyList<double>? RopeFrequencyFactors
    {
        get => _ropeFactors;
        init => _ropeFactors = value is null ? null : new ValueList<double>(value);
    }

    private readonly IReadOnlyList<double>? _ropeFactors;

    /// <summary>Whether the output projection reuses the token embedding (then there is no lm_head.weight).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Beginning-of-sequence token, when the config names one.</summary>
    public int? BosTokenId { get; init; }

    /// <summary>All tokens that end generation (config.json's eos_token_id merged with generation_config.json's).</summary>
    public IReadOnlyList<int> EosTokenIds
    {
        get => _eosTokenIds;
        init => _eosTokenIds = new ValueList<int>(value ?? throw new ArgumentNullException(nameof(value)));
    }

    /// <summary>Longest context the model was configured for.</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>The checkpoint's dtype as Hugging Face names it ("bfloat16", "float16", "float32").</summary>
    public string TorchDtype { get; init; } = "float32";

    /// <summary>
    /// The block format a quantised checkpoint's matrices are stored in (config.json's "quantization"
    /// entry, written by ilgpu-llama quantize), or null for a checkpoint of BF16/F16/F32 values.
    /// </summary>
    public Kernels.BlockQuantFormat? Quantization { get; init; }

    /// <summary>
    /// The K-quant mix a quantised checkpoint was written in (config.json's "quantization.format"
    /// q4_k_m or q5_k_m), or null; <see cref="Quantization"/> is then the mix's main format.
    /// </summary>
    public WeightMix? QuantizationMix { get; init; }

    /// <summary>The device format of each matrix a quantised checkpoint stores: its mix's, or its one format (null when not quantised).</summary>
    public WeightLayout? StoredLayout => QuantizationMix is { } mix ? mix.Layout(this) : Quantization is { } q ? new WeightLayout(q) : null;

    /// <summary>Width of the K and V projections: kv heads × head_dim.</summary>
    public int KvDim => NumKeyValueHeads * HeadDim;

    /// <summary>Width of the Q projection (and input of O): heads × head_dim.</summary>
    public int QDim => NumAttentionHeads * HeadDim;

    /// <summary>How many query heads share one K/V head.</summary>
    public int KvGroupSize => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>
    /// Checks the invariants the engine relies on (positive sizes, whole KV groups, even head_dim for
    /// RoPE pairs, sane RoPE and token ids), throwing one <see cref="ModelConfigException"/> naming <paramref name="sourceName"/>.
    /// </summary>
    public void Validate(string sourceName = "config")
    {
        void Fail(string what) => throw new ModelConfigException($"{sourceName}: {what}");
        void Positive(string key, long value)
        {
            if (value <= 0) Fail($"key '{key}' must be positive, got {value}");
        }

        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("head_dim", HeadDim);
        Positive("vocab_size", VocabSize);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            Fail($"key 'num_attention_heads' ({NumAttentionHeads}) must be a multiple of 'num_key_value_heads' ({NumKeyValueHeads}) for grouped-query attention");
        if (HeadDim % 2 != 0)
            Fail($"key 'head_dim' must be even because RoPE rotates pairs of dimensions, got {HeadDim}");
        if (!(RmsNormEps > 0) || !double.IsFinite(RmsNormEps))
            Fail($"key 'rms_norm_eps' must be a positive number, got {RmsNormEps}");
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta))
            Fail($"key 'rope_theta' must be a positive number, got {RopeTheta}");
        if (string.IsNullOrEmpty(TorchDtype))
            Fail("key 'torch_dtype' must be a non-empty string");
        if (BosTokenId is int bos && (bos < 0 || bos >= VocabSize))
            Fail($"key 'bos_token_id' ({bos}) is outside the vocabulary [0, {VocabSize})");
        foreach (var eos in EosTokenIds)
        {
            if (eos < 0 || eos >= VocabSize)
                Fail($"key 'eos_token_id' ({eos}) is outside the vocabulary [0, {VocabSize})");
        }
        if (RopeFrequencyFactors is { } factors)
        {
            if (factors.Count != HeadDim / 2)
                Fail($"the RoPE frequency factors (rope_freqs.weight) have {factors.Count} values, not head_dim / 2 = {HeadDim / 2}");
            int bad = factors.ToList().FindIndex(f => !(f > 0) || !double.IsFinite(f));
            if (bad >= 0)
                Fail($"RoPE frequency factor {bad} (rope_freqs.weight) is {factors[bad]}, not a positive number");
            if (RopeScaling is not null)
                Fail("the model gives both RoPE frequency factors and rope_scaling; keep one");
        }
        if (RopeScaling is { } rs)
        {
            if (rs.RopeType != "llama3")
                Fail($"key 'rope_scaling.rope_type' '{rs.RopeType}' is not supported (supported: default, llama3)");
            if (!(rs.Factor > 0) || !double.IsFinite(rs.Factor))
                Fail($"key 'rope_scaling.factor' must be a positive number, got {rs.Factor}");
            if (!(rs.LowFreqFactor > 0) || !double.IsFinite(rs.LowFreqFactor))
                Fail($"key 'rope_scaling.low_freq_factor' must be a positive number, got {rs.LowFreqFactor}");
            if (!(rs.HighFreqFactor > rs.LowFreqFactor) || !double.IsFinite(rs.HighFreqFactor))
                Fail($"key 'rope_scaling.high_freq_factor' ({rs.HighFreqFactor}) must be greater than 'low_freq_factor' ({rs.LowFreqFactor})");
            if (rs.OriginalMaxPositionEmbeddings <= 0)
                Fail($"key 'rope_scaling.original_max_position_embeddings' must be positive, got {rs.OriginalMaxPositionEmbeddings}");
        }
    }

    /// <summary>
    /// RoPE inverse frequencies for the head_dim / 2 rotated pairs, exactly as Hugging Face's
    /// <c>_compute_default_rope_parameters</c> and, for "llama3" scaling, <c>_compute_llama3_parameters</c>
    /// (transformers/modeling_rope_utils.py) define them, but evaluated in float64 where Hugging Face uses
    /// float32, so callers can round once to whatever precision their kernels use.
    /// </summary>
    public double[] RopeInverseFrequencies()
    {
        int half = HeadDim / 2;
        var inv = new double[half];
        for (int i = 0; i < half; i++)
            inv[i] = 1.0 / Math.Pow(RopeTheta, (2.0 * i) / HeadDim);

        if (RopeFrequencyFactors is { } factors)
        {
            // llama.cpp's ggml_rope_ext divides each pair's angle by its factor.
            for (int i = 0; i < half; i++)
                inv[i] /= factors[i];
            return inv;
        }
        if (RopeScaling is not { } rs) return inv;

        double lowFreqWavelen = rs.OriginalMaxPositionEmbeddings / rs.LowFreqFactor;
        double highFreqWavelen = rs.OriginalMaxPositionEmbeddings / rs.HighFreqFactor;
        for (int i = 0; i < half; i++)
        {
            double wavelen = 2 * Math.PI / inv[i];
            if (wavelen > lowFreqWavelen)
            {
                // Long wavelengths (low frequencies) are interpolated: slowed down by the full factor.
                inv[i] /= rs.Factor;
            }
            else if (wavelen >= highFreqWavelen)
            {
                // In between, blend smoothly from fully scaled to untouched.
                double smooth = (rs.OriginalMaxPositionEmbeddings / wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor);
                inv[i] = (1 - smooth) * inv[i] / rs.Factor + smooth * inv[i];
            }
            // Short wavelengths (high frequencies) stay as they are.
        }
        return inv;
    }
}
