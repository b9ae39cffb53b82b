"""The papers' numbers (VLVAE Tables 1-2, JMVAE Tables 1 and 3), for side-by-side tables: the VLVAE paper's
(validation set) and the JMVAE paper's (MNIST test set)."""

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

JMVAE_MNIST = {  # Suzuki et al., Table 1 (marginal, conditional) and Table 3 (joint); MNIST test set
    "log p(x)": {"VAE": {"multiple": -86.91},
                 "JMVAE-zero": {"multiple": -86.89, "single": -86.89},
                 "JMVAE-kl, alpha = 0.01": {"multiple": -86.89, "single": -86.55},
                 "JMVAE-kl, alpha = 0.1": {"multiple": -86.86, "single": -86.73},
                 "JMVAE-kl, alpha = 1": {"multiple": -89.20, "single": -89.20}},
    "log p(x|w)": {"CVAE": {"multiple": -83.80},
                   "CMMA": {"multiple": -86.12},
                   "JMVAE-zero": {"multiple": -84.64, "single": -4838.0},
                   "JMVAE-kl, alpha = 0.01": {"multiple": -84.61, "single": -129.6},
                   "JMVAE-kl, alpha = 0.1": {"multiple": -84.72, "single": -126.0},
                   "JMVAE-kl, alpha = 1": {"multiple": -86.97, "single": -112.7}},
    "log p(x,w)": {"JMVAE-zero": -86.96, "JMVAE-kl, alpha = 0.01": -86.94, "JMVAE-kl, alpha = 0.1": -86.93,
                   "JMVAE-kl, alpha = 1": -89.28},
}

JMVAE_SETTING = ("MNIST, 50k training images binarised dynamically, 10k test images; paper MLPs (512-unit layers, "
                 "z = 64); importance-weighted bounds")
