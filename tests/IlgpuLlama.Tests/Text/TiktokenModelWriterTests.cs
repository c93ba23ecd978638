using System.Text;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Text;

public class TiktokenModelWriterTests
{
    [Fact]
    public void TrainByteLevel_ReturnsBytesThenMerges_Deterministically()
    {
        IReadOnlyList<byte[]> ranks = TiktokenModelWriter.TrainByteLevel(TestTokenizers.Corpus, 256);
        Assert.Equal(512, ranks.Count);
        for (int b = 0; b < 256; b++) Assert.Equal([(byte)b], ranks[b]);
        Assert.All(ranks.Skip(256), token => Assert.True(token.Length >= 2));
        Assert.Equal(ranks.Count, ranks.Select(Convert.ToBase64String).Distinct().Count());

        IReadOnlyList<byte[]> again = TiktokenModelWriter.TrainByteLevel(TestTokenizers.Corpus, 256);
        Assert.Equal(ranks, again);
    }

    [Fact]
    public void TrainByteLevel_FirstMerge_IsTheMostFrequentPair()
    {
        // "aa" occurs 3 times per piece "aaaa" (overlapping count), more than any other pair.
        IReadOnlyList<byte[]> ranks = TiktokenModelWriter.TrainByteLevel("aaaa bb aaaa", 1);
        Assert.Equal("aa"u8.ToArray(), ranks[256]);
    }

    [Fact]
    public void TrainByteLevel_TooSmallCorpus_Throws()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => TiktokenModelWriter.TrainByteLevel("ab", 5));
        Assert.Contains("1 merges", ex.Message);
    }

    [Fact]
    public void WrittenModel_LoadsAsDemoVocabulary_AndRoundTripsAnyText()
    {
        using var dir = new TempDir();
        string path = System.IO.Path.Combine(dir.Path, "tokenizer.model");
        TiktokenModelWriter.Write(path, TestTokenizers.TinyRanks);
        Assert.Equal(["tokenizer.model"], Directory.GetFiles(dir.Path).Select(System.IO.Path.GetFileName));

        LlamaTokenizer tok = LlamaTokenizer.FromDirectory(dir.Path);
        Assert.Equal(512, tok.RankCount);
        Assert.Equal(768, tok.VocabSize);
        Assert.Equal(512, tok.BosId);
        Assert.Equal(521, tok.EotId);

        string[] texts =
        [
            TestTokenizers.Corpus,
            "Unseen words: zyxwvut, Ωμέγα, Ελληνικά, русский, עברית, हिन्दी, 🧪🔬, \u0000\u0001 control, \r\n end",
            "<|eot_id|> typed by a user",
        ];
        foreach (string text in texts)
        {
            IReadOnlyList<int> ids = tok.Encode(text, addBos: true);
            Assert.Equal(512, ids[0]);
            Assert.All(ids.Skip(1), id => Assert.InRange(id, 0, 511));
            Assert.Equal(text, tok.Decode(ids.Skip(1)));
        }
    }

    [Fact]
    public void Merges_ShortenTheTrainingText()
    {
        LlamaTokenizer tok = TestTokenizers.Tiny;
        int bytes = Encoding.UTF8.GetByteCount(TestTokenizers.Corpus);
        int tokens = tok.Encode(TestTokenizers.Corpus, addBos: false).Count;
        Assert.True(tokens < bytes / 2, $"{tokens} tokens for {bytes} bytes");
    }

    [Fact]
    public void Write_ReplacesExistingFile_AndRejectsDuplicates()
    {
        using var dir = new TempDir();
        string path = System.IO.Path.Combine(dir.Path, "tokenizer.model");
        File.WriteAllText(path, "old contents");
        TiktokenModelWriter.Write(path, [[(byte)'a'], [(byte)'b'], "ab"u8.ToArray()]);
        Assert.Equal("YQ== 0\nYg== 1\nYWI= 2\n", File.ReadAllText(path));

        Assert.Throws<ArgumentException>(() => TiktokenModelWriter.Write(path, [[(byte)'a'], [(byte)'a']]));
        Assert.Equal("YQ== 0\nYg== 1\nYWI= 2\n", File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(dir.Path));
    }
}
