using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Tests.Model;

/// <summary>
/// A plain float64 Llama 3 forward pass (Hugging Face LlamaForCausalLM semantics: RMSNorm, rotate_half
/// RoPE with llama3 frequencies, causal GQA attention, SwiGLU, tied or untied LM head) over a model
/// directory's weights, optionally stored in a weight format first: the matrices are then the values
/// that format holds (rounded to 16 bits, or quantised and dequantised as ggml defines it). It is
/// checked against the independent float64 golden reference, then serves as the reference of the
/// quantised models.
/// </summary>
public sealed class ReferenceForward
{
    readonly LlamaConfig config;
    readonly Dictionary<string, double[]> weights = new();

    public ReferenceForward(string modelDir, WeightFormat? matrixFormat = null)
    {
        config = LlamaConfig.FromDirectory(modelDir);
        using var source = SafetensorsModel.Open(modelDir);
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var t = source.GetTensor(name);
            var values = new float[t.ElementCount];
            DTypeConversion.ToF32(source.GetSpan(t, 0, (int)t.ByteLength), t.DType, values);
            weights[name] = shape.Length == 2 && matrixFormat is not null
                ? HostMatrix.From(matrixFormat, values, (int)shape[0], (int)shape[1]).Dequantized()
                : Array.ConvertAll(values, v => (double)v);
        }
        if (config.TieWordEmbeddings)
            weights[LlamaConfig.LmHeadName] = weights["model.embed_tokens.weight"];
    }

    /// <summary>A forward pass over weights given as fp32 values by engine tensor name (matrices optionally stored in <paramref name="matrixFormat"/> first).</summary>
    public ReferenceForward(LlamaConfig config, IReadOnlyDictionary<string, float[]> values, WeightFormat? matrixFormat = null)
        : this(config, values, _ => matrixFormat)
    {
    }

    /// <summary>As the other overload, each matrix stored first in <paramref name="formatOf"/>'s format for it (null: as given).</summary>
    public ReferenceForward(LlamaConfig config, IReadOnlyDictionary<string, float[]> values, Func<string, WeightFormat?> formatOf)
    {
        this.config = config;
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var v = values[name];
            weights[name] = shape.Length == 2 && formatOf(name) is { } f
                ? HostMatrix.From(f, v, (int)shape[0], (int)shape[1]).Dequantized()
                : Array.ConvertAll(v, x => (double)x);
        }
        if (config.TieWordEmbeddings)
            weights[LlamaConfig.LmHeadName] = weights["model.embed_tokens.weight"];
    }

    double[] W(string name) => weights[name];

    static double[] MatVec(double[] w, double[] x, int rows, int cols)
    {
        var y = new double[rows];
        Parallel.For(0, rows, r =>
        {
            double s = 0;
            for (int c = 0; c < cols; c++)
                s += w[(long)r * cols + c] * x[c];
            y[r] = s;
        });
        return y;
    }

    double[] RmsNorm(double[] x, string weight)
    {
        var g = W(weight);
        double ss = x.Sum(v => v * v);
        double inv = 1 / Math.Sqrt(ss / x.Length + config.RmsNormEps);
        return x.Select((v, i) => v * inv * g[i]).ToArray();
    }

    void Rope(double[] v, int heads, int pos, double[] invFreq)
    {
        int hd = config.HeadDim, half = hd / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = pos * invFreq[i], cos = Math.Cos(angle), sin = Math.Sin(angle);
                double a = v[h * hd + i], b = v[h * hd + i + half];
                v[h * hd + i] = a * cos - b * sin;
                v[h * hd + i + half] = b * cos + a * sin;
            }
        }
    }

    /// <summary>Logits [tokens, vocab] of every position (row t predicts token t + 1).</summary>
    public double[][] Logits(IReadOnlyList<int> tokens)
    {
        var c = config;
        int h = c.HiddenSize, hd = c.HeadDim, heads = c.NumAttentionHeads, kvHeads = c.NumKeyValueHeads, inter = c.IntermediateSize;
        var invFreq = c.RopeInverseFrequencies();
        var keys = new List<double[]>[c.NumHiddenLayers];
        var values = new List<double[]>[c.NumHiddenLayers];
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            keys[l] = [];
            values[l] = [];
        }
        var result = new double[tokens.Count][];
        for (int pos = 0; pos < tokens.Count; pos++)
        {
            var emb = W("model.embed_tokens.weight");
            var x = Enumerable.Range(0, h).Select(i => emb[(long)tokens[pos] * h + i]).ToArray();
            for (int l = 0; l < c.NumHiddenLayers; l++)
            {
                string p = $"model.layers.{l}.";
                var xn = RmsNorm(x, p + "input_layernorm.weight");
                var q = MatVec(W(p + "self_attn.q_proj.weight"), xn, c.QDim, h);
                var k = MatVec(W(p + "self_attn.k_proj.weight"), xn, c.KvDim, h);
                var v = MatVec(W(p + "self_attn.v_proj.weight"), xn, c.KvDim, h);
                Rope(q, heads, pos, invFreq);
                Rope(k, kvHeads, pos, invFreq);
                keys[l].Add(k);
                values[l].Add(v);
                var attn = new double[c.QDim];
                for (int head = 0; head < heads; head++)
                {
                    int kvh = head / (heads / kvHeads);
                    var scores = new double[pos + 1];
                    for (int t = 0; t <= pos; t++)
                    {
                        double s = 0;
                        for (int d = 0; d < hd; d++)
                            s += q[head * hd + d] * keys[l][t][kvh * hd + d];
                        scores[t] = s / Math.Sqrt(hd);
                    }
                    double max = scores.Max();
                    var e = scores.Select(s => Math.Exp(s - max)).ToArray();
                    double sum = e.Sum();
                    for (int d = 0; d < hd; d++)
                    {
                        double acc = 0;
                        for (int t = 0; t <= pos; t++)
                            acc += e[t] * values[l][t][kvh * hd + d];
                        attn[head * hd + d] = acc / sum;
                    }
                }
                var o = MatVec(W(p + "self_attn.o_proj.weight"), attn, h, c.QDim);
                for (int i = 0; i < h; i++)
                    x[i] += o[i];
                xn = RmsNorm(x, p + "post_attention_layernorm.weight");
                var gate = MatVec(W(p + "mlp.gate_proj.weight"), xn, inter, h);
                var up = MatVec(W(p + "mlp.up_proj.weight"), xn, inter, h);
                var act = gate.Select((g, i) => g / (1 + Math.Exp(-g)) * up[i]).ToArray();
                var down = MatVec(W(p + "mlp.down_proj.weight"), act, h, inter);
                for (int i = 0; i < h; i++)
                    x[i] += down[i];
            }
            result[pos] = MatVec(W(LlamaConfig.LmHeadName), RmsNorm(x, "model.norm.weight"), c.VocabSize, h);
        }
        return result;
    }
}
