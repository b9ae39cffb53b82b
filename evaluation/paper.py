"""The VLVAE paper's numbers (validation set; ../shared/paper_tables.md), for side-by-side tables."""

TABLE_1 = {  # text inference q(z|y): true posterior (Eq. 3) vs aggregate posterior (Eq. 5)
    "two_objects": {"correctness": {"text_true": 72.75, "text_agg": 87.01},
                    "log p(x|y)": {"text_true": 75716.48, "text_agg": 75739.79}},
    "celeba": {"correctness": {"text_true": 80.83, "text_agg": 80.32},
               "log p(x|y)": {"text_true": -6776.27, "text_agg": -6637.08}},
}

TABLE_2 = {  # prior N(0, I) vs learned aggregate prior q(z)
    "two_objects": {"correctness": {"prior": 65.62, "prior_agg": 83.81},
                    "log p(x)": {"prior": 75715.36, "prior_agg": 75726.15},
                    "log p(y)": {"prior": -19.43, "prior_agg": -17.40}},
    "celeba": {"correctness": {"prior": 80.25, "prior_agg": 81.14},
               "log p(x)": {"prior": -6686.31, "prior_agg": -6636.30},
               "log p(y)": {"prior": -53.44, "prior_agg": -11.78}},
}

SETTING = "112x112 (Two Objects) / 64x64 (CelebA), z = 50, batch 20, 400k steps"
