using System.IO.Compression;
using System.Reflection;
using System.Text;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Text;

/// <summary>Tokenizers shared by the text tests; building them is the slow part of the suite.</summary>
internal static class TestTokenizers
{
    /// <summary>
    /// cl100k_base ranks with the Llama 3 regex and Llama 3 specials at 128000. Llama 3's first 100,256
    /// ranks are cl100k_base's, so for text that those ranks cover the ids equal real Llama 3 ids.
    /// </summary>
    public static LlamaTokenizer Cl100kAsLlama3 => Cl100k.Value;

    /// <summary>A 512-rank tokenizer trained on <see cref="Corpus"/> (specials at 512..767).</summary>
    public static LlamaTokenizer Tiny => TinyLazy.Value;

    public static IReadOnlyList<byte[]> TinyRanks => TinyRanksLazy.Value;

    public const string Corpus =
        "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs into the forest.\n" +
        "Once upon a time there was a tiny llama that liked to count: one, two, three, 123, 4567, 89.\n" +
        "It's a small world, isn't it? We'll see, they'd say, and you're right, I'm sure.\n" +
        "Llamas eat grass in the mountains. The llama and the fox became friends, and the dog watched them play.\n" +
        "Every morning the llama walked to the river, drank cold water, and looked at the clouds above the hills.\n" +
        "The farmer counted the animals: seven llamas, three dogs, two foxes and a very old horse named Thunder.\n" +
        "Programs print text: print(\"hello world\"); return x + y * 2; if (a >= b) { c = a - b; }\n" +
        "Café, naïve, résumé — accents appear too, and so do 中文 characters, Ελληνικά words and emoji 🦙🌄.\n" +
        "In the evening the stars came out, the wind grew quiet, and the tiny llama fell asleep under the old tree.\n" +
        "Questions and answers: What is the capital of France? Paris. What do llamas like? Grass, water and friends.\n";

    private static readonly Lazy<LlamaTokenizer> Cl100k = new(() =>
    {
        using Stream ranks = OpenCl100kRanks();
        return LlamaTokenizer.FromTiktoken(ranks, specialTokenBase: Llama3Vocabulary.Llama3RankCount);
    });

    private static readonly Lazy<IReadOnlyList<byte[]>> TinyRanksLazy = new(() => TiktokenModelWriter.TrainByteLevel(Corpus, 256));

    private static readonly Lazy<LlamaTokenizer> TinyLazy = new(() => LlamaTokenizer.FromRanks(TinyRanks));

    /// <summary>
    /// cl100k_base in the standard tiktoken format ("base64 rank" lines). The data package embeds it
    /// deflate-compressed in Microsoft.ML's compact variant: a "Capacity: N" line, then one base64
    /// token per line with the rank implied by the line number.
    /// </summary>
    public static Stream OpenCl100kRanks() => new MemoryStream(Cl100kTiktokenText.Value, writable: false);

    private static readonly Lazy<byte[]> Cl100kTiktokenText = new(() =>
    {
        Assembly data = Assembly.Load("Microsoft.ML.Tokenizers.Data.Cl100kBase");
        using Stream compressed = data.GetManifestResourceStream("cl100k_base.tiktoken.deflate")
            ?? throw new InvalidOperationException("cl100k_base.tiktoken.deflate is missing from the data package.");
        using var reader = new StreamReader(new DeflateStream(compressed, CompressionMode.Decompress));
        var text = new StringBuilder();
        string? line = reader.ReadLine();
        if (line is not null && line.StartsWith("Capacity: ", StringComparison.Ordinal)) line = reader.ReadLine();
        for (int rank = 0; line is not null; rank++, line = reader.ReadLine())
        {
            if (line.Length > 0) text.Append(line).Append(' ').Append(rank).Append('\n');
        }
        return Encoding.ASCII.GetBytes(text.ToString());
    });
}
